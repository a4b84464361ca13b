package tasukitest_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
	"github.com/tasukiq/tasuki/worker"
)

type SendWelcome struct {
	UserID int64 `json:"user_id"`
}

func (SendWelcome) Kind() string { return "send_welcome" }

// signUp is the code under test: it inserts a welcome job in the
// transaction that creates the user.
func signUp(ctx context.Context, tx pgx.Tx, client *tasuki.Client[SendWelcome], userID int64) error {
	_, err := client.InsertTx(ctx, tx, SendWelcome{UserID: userID}, &tasuki.InsertOpts{Queue: "welcome"})
	return err
}

// openPool opens and migrates the examples' database.
func openPool(ctx context.Context) *pgxpool.Pool {
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	return pool
}

// A test runs the code under test in a transaction it rolls back, and
// asserts on the jobs that transaction inserted: the jobs other tests
// insert meanwhile into the same database, committed or not, are not
// seen.
func Example() {
	ctx := context.Background()
	pool := openPool(ctx)
	defer pool.Close()
	client, err := tasuki.NewClient[SendWelcome](pool, tasuki.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	// In a test, t is the test's *testing.T.
	t := &testing.T{}

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := signUp(ctx, tx, client, 42); err != nil {
		log.Fatal(err)
	}

	job := tasukitest.RequireInsertedTx[SendWelcome](ctx, t, tx, &tasukitest.Want{
		Payload: SendWelcome{UserID: 42},
		Queue:   "welcome",
	})
	fmt.Println("welcome job for user", job.Payload.UserID, "is", job.Status)
	tasukitest.RequireNotInsertedTx[SendWelcome](ctx, t, tx, &tasukitest.Want{Payload: SendWelcome{UserID: 43}})
	// Output: welcome job for user 42 is pending
}

// Code under test that inserts outside the test's transactions (a handler
// of an HTTP test server, say) marks its jobs with the test's scope,
// through ScopeMiddleware and the context of WithScope; the assertions
// given that context see only those jobs.
func ExampleWithScope() {
	ctx := context.Background()
	pool := openPool(ctx)
	defer pool.Close()
	// The application's client, built by the test with the middleware.
	client, err := tasuki.NewClient[SendWelcome](pool, tasuki.ClientConfig{
		InsertMiddleware: []tasuki.InsertMiddleware{tasukitest.ScopeMiddleware},
	})
	if err != nil {
		log.Fatal(err)
	}
	t := &testing.T{} // in a test, the test's *testing.T

	ctx = tasukitest.WithScope(ctx, t)
	if _, err := client.Insert(ctx, SendWelcome{UserID: 7}, nil); err != nil {
		log.Fatal(err)
	}

	job := tasukitest.RequireInserted[SendWelcome](ctx, t, pool, nil)
	fmt.Println("welcome job for user", job.Payload.UserID)
	// Output: welcome job for user 7
}

// RequireManyInsertedTx checks the jobs of several kinds a transaction
// inserted, in their order.
func ExampleRequireManyInsertedTx() {
	ctx := context.Background()
	pool := openPool(ctx)
	defer pool.Close()
	inserter, err := tasuki.NewInserter(pool, tasuki.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	t := &testing.T{} // in a test, the test's *testing.T

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := inserter.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Payload: SendWelcome{UserID: 1}},
		{Payload: SendSMS{Number: "+81 3 1234 5678"}},
		{Payload: SendWelcome{UserID: 2}},
	}); err != nil {
		log.Fatal(err)
	}

	jobs := tasukitest.RequireManyInsertedTx(ctx, t, tx, []tasukitest.Want{
		{Payload: SendWelcome{UserID: 1}},
		{Kind: "send_sms"},
		{Payload: SendWelcome{UserID: 2}},
	})
	for _, job := range jobs {
		fmt.Println(job.Kind, string(job.Payload))
	}
	// Output:
	// send_welcome {"user_id": 1}
	// send_sms {"number": "+81 3 1234 5678"}
	// send_welcome {"user_id": 2}
}

// Work runs one job through a worker's handler, without running the
// worker: the test then checks what the handler did and the job's
// outcome.
func ExampleWork() {
	ctx := context.Background()
	pool := openPool(ctx)
	defer pool.Close()
	client, err := tasuki.NewClient[SendWelcome](pool, tasuki.ClientConfig{
		InsertMiddleware: []tasuki.InsertMiddleware{tasukitest.ScopeMiddleware},
	})
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.New(pool, worker.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[SendWelcome]) error {
			fmt.Println("welcoming user", job.Payload.UserID)
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	t := &testing.T{} // in a test, the test's *testing.T
	ctx = tasukitest.WithScope(ctx, t)

	job, err := client.Insert(ctx, SendWelcome{UserID: 9}, nil)
	if err != nil {
		log.Fatal(err)
	}
	res := tasukitest.Work(ctx, t, w, job.ID)
	fmt.Println("event:", res.Event)
	tasukitest.RequireInserted[SendWelcome](ctx, t, pool, &tasukitest.Want{Status: tasuki.StatusCompleted})
	// Output:
	// welcoming user 9
	// event: completed
}
