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

// Look at queues, page through jobs, and pause a queue: every worker
// process, wherever it runs, stops leasing from it until it is resumed.
func ExampleAdmin() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports-admin"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.InsertMany(ctx, []Report{{Month: "2026-01"}, {Month: "2026-02"}, {Month: "2026-03"}}, nil); err != nil {
		log.Fatal(err)
	}

	admin, err := tasuki.NewAdmin(pool)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := admin.PauseQueue(ctx, "reports-admin"); err != nil {
		log.Fatal(err)
	}
	stats, err := admin.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range stats {
		if s.Queue == "reports-admin" {
			fmt.Printf("%s: %d pending, paused %v\n", s.Queue, s.Pending, s.Paused)
		}
	}

	// Newest first, two at a time; Next is 0 after the last page.
	var pages int
	for after := int64(0); ; {
		page, err := admin.List(ctx, tasuki.ListParams{Queue: "reports-admin", Limit: 2, After: after})
		if err != nil {
			log.Fatal(err)
		}
		pages++
		if page.Next == 0 {
			break
		}
		after = page.Next
	}
	fmt.Println("pages:", pages)
	if _, err := admin.ResumeQueue(ctx, "reports-admin"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// reports-admin: 3 pending, paused true
	// pages: 2
}

// Keep an audit queue's finished jobs forever and its failed ones for a
// month, for every worker process at once: the retention cleaner of any
// worker, of any queue, applies each queue's own setting.
func ExampleAdmin_SetRetention() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	admin, err := tasuki.NewAdmin(pool)
	if err != nil {
		log.Fatal(err)
	}
	err = admin.SetRetention(ctx, "audit-example", tasuki.Retention{
		Completed: tasuki.KeepForever,
		Canceled:  tasuki.KeepForever,
		Failed:    30 * 24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	stats, err := admin.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range stats {
		if s.Queue == "audit-example" {
			fmt.Println("completed kept forever:", s.Retention.Completed == tasuki.KeepForever)
			fmt.Println("failed kept:", s.Retention.Failed)
		}
	}
	// Output:
	// completed kept forever: true
	// failed kept: 720h0m0s
}
