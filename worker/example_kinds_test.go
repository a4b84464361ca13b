package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// SendEmail and ChargeCard are two job types of one shop: two kinds.
type SendEmail struct {
	To string `json:"to"`
}

// Kind names the jobs of SendEmail: it must not change once such jobs exist.
func (SendEmail) Kind() string { return "send_email" }

type ChargeCard struct {
	Cents int `json:"cents"`
}

// Kind names the jobs of ChargeCard: it must not change once such jobs exist.
func (ChargeCard) Kind() string { return "charge_card" }

// One worker runs every kind of a process, in several queues, with one
// Run. A job reaches only the handler of its kind; jobs of several kinds
// are inserted together with an Inserter.
func Example_kinds() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// An order inserts both jobs in one COPY, in the order's transaction.
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ins.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Payload: ChargeCard{Cents: 1250}, InsertOpts: &tasuki.InsertOpts{Queue: "payments"}},
		{Payload: SendEmail{To: "alice@example.com"}},
	}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	var done []string
	finish := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		done = append(done, what)
		if len(done) == 2 {
			stop() // only to end the example
		}
	}
	w, err := worker.New(pool, worker.Config{
		Queues: map[string]worker.QueueConfig{
			"default":  {Concurrency: 50},
			"payments": {Concurrency: 5},
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[SendEmail]) error {
			finish(fmt.Sprintf("%s in %s: mail to %s", job.Kind, job.Queue, job.Payload.To))
			return nil
		}),
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[ChargeCard]) error {
			finish(fmt.Sprintf("%s in %s: %d cents", job.Kind, job.Queue, job.Payload.Cents))
			return nil
		}).With(worker.KindConfig{MaxConcurrency: 2}),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	sort.Strings(done)
	for _, d := range done {
		fmt.Println(d)
	}
	// Output:
	// charge_card in payments: 1250 cents
	// send_email in default: mail to alice@example.com
}
