package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// SyncAccount waits for an upstream that is not ready at first.
type SyncAccount struct {
	Account string `json:"account"`
}

// Kind names the jobs of SyncAccount.
func (SyncAccount) Kind() string { return "sync_account" }

// A handler that cannot run yet snoozes its job: it runs again later with
// the same attempt, and Snoozes tells it how often it waited.
func Example_snooze() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[SyncAccount](pool, tasuki.ClientConfig{Queue: "sync"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.Insert(ctx, SyncAccount{Account: "acme"}, nil); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "sync", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[SyncAccount]) error {
			fmt.Printf("attempt %d, snoozed %d times\n", job.Attempt, job.Snoozes)
			if job.Snoozes < 2 { // the upstream is not ready yet
				return tasuki.Snooze(0)
			}
			stop() // only to end the example
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// attempt 1, snoozed 0 times
	// attempt 1, snoozed 1 times
	// attempt 1, snoozed 2 times
}
