package tasuki_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
)

// Insert a job in the same transaction as the application's own row: the
// job exists if and only if the transaction commits, and the workers are
// woken once it did. A program that exits right after calls Flush, so that
// the wake-up goes out first.
func ExampleClient_InsertTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS example_orders (id bigint PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports-tx"})
	if err != nil {
		log.Fatal(err)
	}
	var job *tasuki.Job[Report]
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO example_orders (id) VALUES (1) ON CONFLICT DO NOTHING`); err != nil {
			return err
		}
		job, err = client.InsertTx(ctx, tx, Report{Month: "2026-12"}, nil)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// The workers are woken once the transaction committed; Flush waits
	// for that before the program ends.
	if err := client.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, job.Payload.Month)
	// Output: pending 2026-12
}
