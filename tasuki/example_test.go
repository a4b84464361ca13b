package tasuki_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
)

type Report struct {
	Month string `json:"month"`
}

// Kind names the jobs of Report: it must not change once such jobs exist.
func (Report) Kind() string { return "report" }

func ExampleMigrate() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	// Safe at every start: a current schema is left as it is.
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	m, err := tasuki.NewMigrator(pool)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	current, latest, err := m.Version(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("schema is current:", current == latest)
	// Output: schema is current: true
}

func ExampleClient_Insert() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports"})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Insert(ctx, Report{Month: "2026-11"}, &tasuki.InsertOpts{
		Delay:       time.Hour, // by the database clock
		Priority:    1,         // after priority-0 jobs
		MaxAttempts: 5,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, job.Payload.Month, job.MaxAttempts)
	// Output: pending 2026-11 5
}

func ExampleClient_InsertMany() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports-bulk"})
	if err != nil {
		log.Fatal(err)
	}
	reports := make([]Report, 12)
	for i := range reports {
		reports[i].Month = fmt.Sprintf("2026-%02d", i+1)
	}
	// One COPY, one transaction, one NOTIFY.
	n, err := client.InsertMany(ctx, reports, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("inserted", n)
	// Output: inserted 12
}

func ExampleClient_Cancel() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	client, err := tasuki.NewClient[Report](pool, tasuki.ClientConfig{Queue: "reports-cancel"})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Insert(ctx, Report{Month: "2026-12"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	job, err = client.Cancel(ctx, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status)
	// A finished job cannot be canceled again.
	_, err = client.Cancel(ctx, job.ID)
	var finished *tasuki.JobFinishedError
	fmt.Println(errors.As(err, &finished), finished.Status)
	// Output:
	// canceled
	// true canceled
}
