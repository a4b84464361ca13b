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

type SendWelcome struct {
	UserID int64 `json:"user_id"`
}

// Kind names the jobs of SendWelcome: it must not change once such jobs exist.
func (SendWelcome) Kind() string { return "send_welcome" }

// Insert a job in the same transaction as the data it belongs to, and run
// it with a worker.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	client, err := tasuki.NewClient[SendWelcome](pool, tasuki.ClientConfig{Queue: "welcome"})
	if err != nil {
		log.Fatal(err)
	}
	// The job exists if and only if the transaction commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.InsertTx(ctx, tx, SendWelcome{UserID: 42}, nil); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "welcome", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[SendWelcome]) error {
		fmt.Printf("welcome, user %d (attempt %d)\n", job.Payload.UserID, job.Attempt)
		stop() // only to end the example: Run returns after a graceful shutdown
		return nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	// Output: welcome, user 42 (attempt 1)
}

// A handler chooses the outcome: nil completes the job, an error retries it
// with the worker's backoff, tasuki.RetryAfter retries it after a given
// delay and tasuki.Cancel cancels it for good.
func Example_outcomes() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	type Charge struct {
		Cents int `json:"cents"`
	}
	// A type declared in a function cannot have a Kind method: the kind is
	// given to the client and to the handler instead.
	client, err := tasuki.NewClient[Charge](pool, tasuki.ClientConfig{Queue: "charges", Kind: "charge"})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Insert(ctx, Charge{Cents: -5}, nil)
	if err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "charges", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, worker.Handle(worker.HandlerFunc[Charge](func(ctx context.Context, job *tasuki.Job[Charge]) error {
		defer stop()
		switch {
		case job.Payload.Cents < 0:
			return tasuki.Cancel(errors.New("negative amount"))
		case job.Payload.Cents > 1_000_000:
			return tasuki.RetryAfter(time.Hour, errors.New("over the hourly limit"))
		}
		return nil
	})).With(worker.KindConfig{Kind: "charge"}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	job, err = client.Get(ctx, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, "-", job.LastError())
	// Output: canceled - job canceled by its handler: negative amount
}
