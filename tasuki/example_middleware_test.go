package tasuki_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
)

type requestIDKey struct{}

// Insert middleware sees every job before it is written, in single and
// bulk inserts alike, and may change its options: here it copies the
// request id of the caller's context into each job's metadata, where the
// job's handler (Job.Metadata) and work middleware find it.
func ExampleInsertMiddleware() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	requestID := func(ctx context.Context, jobs []*tasuki.InsertParams, next func(context.Context) error) error {
		if id, ok := ctx.Value(requestIDKey{}).(string); ok {
			for _, job := range jobs {
				job.Opts.Metadata["request_id"] = id
			}
		}
		return next(ctx)
	}
	// One config for every client of the process: the middleware runs for
	// all of them.
	cfg := tasuki.ClientConfig{Queue: "reports-mw", InsertMiddleware: []tasuki.InsertMiddleware{requestID}}
	client, err := tasuki.NewClient[Report](pool, cfg)
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Insert(context.WithValue(ctx, requestIDKey{}, "req-42"), Report{Month: "2026-11"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(job.Metadata))
	// Output:
	// {"request_id":"req-42"}
}
