package tasuki_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
)

// Insert a report at most once a day: the second insert of the same
// month's report in the same day finds the first and returns it.
func ExampleUniqueOpts() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports-unique"})
	if err != nil {
		log.Fatal(err)
	}
	day := time.Date(2030, 1, 15, 9, 0, 0, 0, time.UTC)
	opts := &tasuki.InsertOpts{
		RunAt:    day,
		Unique:   &tasuki.UniqueOpts{ByArgs: true, ByPeriod: 24 * time.Hour},
		Metadata: map[string]any{"requested_by": "billing"},
	}
	first, err := client.Insert(ctx, Report{Month: "2029-12"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	opts.RunAt = day.Add(8 * time.Hour) // later the same day
	second, err := client.Insert(ctx, Report{Month: "2029-12"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(first.Duplicate, second.Duplicate, first.ID == second.ID)
	fmt.Println(string(second.Metadata))
	// Output:
	// false true true
	// {"requested_by": "billing"}
}
