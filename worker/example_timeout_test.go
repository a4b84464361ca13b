package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// FetchFeed calls a slow upstream.
type FetchFeed struct {
	URL string `json:"url"`
}

// Kind names the jobs of FetchFeed.
func (FetchFeed) Kind() string { return "fetch_feed" }

// A kind's timeout ends its handler's context: the attempt fails with an
// error that says so, and is retried by the retry policy.
func ExampleKindConfig_timeout() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[FetchFeed](pool, tasuki.ClientConfig{Queue: "feeds"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.Insert(ctx, FetchFeed{URL: "https://example.com/feed"}, nil); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "feeds", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[FetchFeed]) error {
			defer stop() // only to end the example
			<-ctx.Done() // the upstream does not answer in time
			var timeout *worker.TimeoutError
			fmt.Println(errors.As(context.Cause(ctx), &timeout), timeout.Timeout)
			return ctx.Err()
		}).With(worker.KindConfig{Timeout: 50 * time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	// Output: true 50ms
}
