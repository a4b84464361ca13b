package tasuki_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
)

// BillingRun is a payload type that declares its kind's insert options.
type BillingRun struct {
	Number string `json:"number"`
}

// Kind names the jobs of BillingRun.
func (BillingRun) Kind() string { return "billing_run" }

// InsertOpts are the defaults of every insert of an BillingRun.
func (BillingRun) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Queue: "billing", MaxAttempts: 5, Unique: &tasuki.UniqueOpts{ByArgs: true}}
}

// A payload type gives its kind's defaults next to the type: every insert
// uses them unless it sets an option itself.
func ExampleDefaultOpts() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[BillingRun](pool, tasuki.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	first, err := client.Insert(ctx, BillingRun{Number: "INV-1001"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	again, err := client.Insert(ctx, BillingRun{Number: "INV-1001"}, &tasuki.InsertOpts{Priority: 1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(first.Queue, first.MaxAttempts, again.Duplicate)
	// Output: billing 5 true
}
