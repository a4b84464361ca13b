// Command shop is a small service whole: several kinds of jobs inserted
// together in the transaction of an order, one worker for all of them with
// logging and OpenTelemetry middleware, and a periodic report. Its test
// (shop_test.go) checks it with package tasukitest.
//
//	cd otel && go run ./example/shop
//
// Without DATABASE_URL it starts a throwaway PostgreSQL cluster. Spans go
// to standard output, one line each.
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// printer prints each finished span on one line.
type printer struct{}

func (printer) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	for _, s := range spans {
		fmt.Printf("span %-24s trace %s parent %s\n", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID())
	}
	return nil
}

func (printer) Shutdown(context.Context) error { return nil }

func run(ctx context.Context) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		cluster, err := pgtemp.Start(ctx, pgtemp.Options{})
		if err != nil {
			return err
		}
		defer cluster.Stop()
		url = cluster.URL
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		return err
	}

	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(printer{}))
	defer tp.Shutdown(ctx)
	inst, err := tasukiotel.New(tasukiotel.Config{TracerProvider: tp})
	if err != nil {
		return err
	}
	shop, err := NewShop(pool, logger, inst.InsertMiddleware())
	if err != nil {
		return err
	}
	w, err := shop.NewWorker(inst, 2*time.Second)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	for order, cents := range []int{1_999, 250_000, 4_500} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			// The order's own rows would be written here, in tx.
			return shop.PlaceOrder(ctx, tx, int64(order+1), fmt.Sprintf("customer%d@example.com", order+1), cents)
		})
		if err != nil {
			return err
		}
	}
	if err := <-done; err != nil {
		return err
	}
	shop.mu.Lock()
	defer shop.mu.Unlock()
	fmt.Printf("charged %d cents; sent %d emails\n", shop.totals, len(shop.sent))
	return nil
}
