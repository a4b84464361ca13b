package worker_test

import (
	"context"
	"encoding/json"
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

// Payment charges a customer's card.
type Payment struct {
	Customer string `json:"customer"`
	Cents    int    `json:"cents"`
}

// Kind names the jobs of Payment.
func (Payment) Kind() string { return "payment" }

// Middleware wraps every handler of a worker (Config.Middleware) or of one
// kind (KindConfig.Middleware): here one logs each attempt with its
// outcome and duration, for every kind, and one turns a card decline into
// a cancellation for the charge kind alone. An ErrorHandler hears of every
// failed attempt. WorkJob runs one job through all of it, as a test would.
func Example_middleware() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	logAttempts := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		start := time.Now()
		err := next(ctx)
		_ = time.Since(start) // a real one would log or record it
		fmt.Printf("%s job, attempt %d: %v\n", job.Kind, job.Attempt, err)
		return err
	}
	errDeclined := errors.New("card declined")
	declinedCancels := func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		err := next(ctx)
		if errors.Is(err, errDeclined) {
			return tasuki.Cancel(err) // retrying will not help
		}
		return err
	}
	charge := worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[Payment]) error {
		switch {
		case job.Payload.Cents > 10_000:
			return errDeclined
		case job.Payload.Customer == "flaky":
			return errors.New("gateway timeout")
		}
		return nil
	}).With(worker.KindConfig{Middleware: []worker.Middleware{declinedCancels}})

	w, err := worker.New(pool, worker.Config{
		Queue:      "payments",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Middleware: []worker.Middleware{logAttempts},
		ErrorHandler: func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) {
			fmt.Printf("error handler: job of kind %s failed: %v\n", job.Kind, err)
		},
	}, charge)
	if err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Payment](pool, tasuki.ClientConfig{Queue: "payments"})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range []Payment{{"acme", 500}, {"acme", 50_000}, {"flaky", 500}} {
		job, err := client.Insert(ctx, p, nil)
		if err != nil {
			log.Fatal(err)
		}
		res, err := w.WorkJob(ctx, job.ID)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("-> %s, now %s\n", res.Event, res.Job.Status)
	}
	// Output:
	// payment job, attempt 1: <nil>
	// -> completed, now completed
	// payment job, attempt 1: job canceled by its handler: card declined
	// -> canceled, now canceled
	// payment job, attempt 1: gateway timeout
	// error handler: job of kind payment failed: gateway timeout
	// -> retried, now pending
}

// An Events value delivers what happens to jobs, from the clients and the
// worker that share it, without ever slowing them: a subscriber that
// falls behind loses events and is told how many (Event.Missed).
func Example_events() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	events := tasuki.NewEvents()
	sub := events.Subscribe(100) // every type; 100 events of room
	defer sub.Close()

	client, err := tasuki.NewClient[Payment](pool, tasuki.ClientConfig{Queue: "payments-events", Events: events})
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.New(pool, worker.Config{Queue: "payments-events", Events: events, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[Payment]) error { return nil }))
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Insert(ctx, Payment{Customer: "acme", Cents: 500}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := w.WorkJob(ctx, job.ID); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev := <-sub.C
		fmt.Println(ev.Type, ev.Kind, ev.Queue, ev.Attempt)
	}
	// Output:
	// inserted payment payments-events 0
	// completed payment payments-events 1
}
