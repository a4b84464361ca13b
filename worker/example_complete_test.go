package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// CreditAccount adds to an account's balance, exactly once.
type CreditAccount struct {
	Account string `json:"account"`
	Cents   int64  `json:"cents"`
}

// Kind names the jobs of CreditAccount.
func (CreditAccount) Kind() string { return "credit_account" }

// A handler whose work is a write to the job's own database completes its
// job in the same transaction: the credit and the completion commit
// together, so a crash between them cannot credit twice.
func ExampleCompleteTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS example_balances (account text PRIMARY KEY, cents bigint NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[CreditAccount](pool, tasuki.ClientConfig{Queue: "credits"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.Insert(ctx, CreditAccount{Account: "acme", Cents: 500}, nil); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "credits", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[CreditAccount]) error {
			defer stop() // only to end the example
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO example_balances VALUES ($1, $2)
					ON CONFLICT (account) DO UPDATE SET cents = example_balances.cents + EXCLUDED.cents`,
					job.Payload.Account, job.Payload.Cents); err != nil {
					return err
				}
				// Last, just before the commit: an error here (the lease
				// was lost) rolls the credit back.
				return worker.CompleteTx(ctx, tx, job)
			})
		}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	var cents int64
	if err := pool.QueryRow(ctx, `SELECT cents FROM example_balances WHERE account = 'acme'`).Scan(&cents); err != nil {
		log.Fatal(err)
	}
	fmt.Println(cents)
	// Output: 500
}
