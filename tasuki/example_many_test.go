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

// Invoice and WelcomeEmail are payload types of two kinds.
type (
	Invoice struct {
		Order int `json:"order"`
	}
	WelcomeEmail struct {
		To string `json:"to"`
	}
)

func (Invoice) Kind() string      { return "invoice" }
func (WelcomeEmail) Kind() string { return "welcome_email" }

// Insert jobs of several kinds into several queues with one COPY, inside
// the application's own transaction: an outbox relay, say, or a sign-up
// that starts several jobs. Each job's kind comes from its payload's Kind
// method; a payload type without one names its kind in Kind. One invalid
// job inserts none of them.
func ExampleInserter_InsertManyTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	inserter, err := tasuki.NewInserter(pool, tasuki.ClientConfig{Queue: "billing-many"})
	if err != nil {
		log.Fatal(err)
	}

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// ... the application's own rows ...
		_, err := inserter.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
			{Payload: Invoice{Order: 1}},
			{Payload: Invoice{Order: 2}},
			{Payload: WelcomeEmail{To: "ana@example.com"}, InsertOpts: &tasuki.InsertOpts{Queue: "emails-many", Priority: 1}},
			{Payload: map[string]string{"order": "2"}, Kind: "audit", InsertOpts: &tasuki.InsertOpts{Queue: "emails-many"}},
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// The workers of both queues are woken once the transaction
	// committed; Flush waits for that before the program ends.
	if err := inserter.Flush(ctx); err != nil {
		log.Fatal(err)
	}

	admin, err := tasuki.NewAdmin(pool)
	if err != nil {
		log.Fatal(err)
	}
	stats, err := admin.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, q := range stats {
		if q.Queue != "billing-many" && q.Queue != "emails-many" {
			continue
		}
		for _, k := range q.Kinds {
			fmt.Printf("%s %s: %d pending\n", q.Queue, k.Kind, k.Pending)
		}
	}
	// Output:
	// billing-many invoice: 2 pending
	// emails-many audit: 1 pending
	// emails-many welcome_email: 1 pending
}
