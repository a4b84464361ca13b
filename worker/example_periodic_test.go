package worker_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// NightlyReport is enqueued by a schedule.
type NightlyReport struct {
	Scope string `json:"scope"`
}

// Kind names the jobs of NightlyReport.
func (NightlyReport) Kind() string { return "nightly_report" }

// A schedule that enqueues a job at every tick, once however many
// processes run it. Cron("0 3 * * *") runs at 3:00 UTC; RunOnStart also
// enqueues one when the worker starts, as here.
func ExamplePeriodic() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := tasuki.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	nightly, err := worker.Cron("0 3 * * *")
	if err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	w, err := worker.New(pool, worker.Config{Queue: "reports-nightly", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		worker.HandleFunc(func(ctx context.Context, job *tasuki.Job[NightlyReport]) error {
			fmt.Println("report:", job.Payload.Scope)
			stop() // only to end the example
			return nil
		}))
	if err != nil {
		log.Fatal(err)
	}
	err = w.AddPeriodic(worker.Periodic("nightly-report", nightly,
		func() (NightlyReport, *tasuki.InsertOpts) {
			return NightlyReport{Scope: "all"}, &tasuki.InsertOpts{Queue: "reports-nightly", Timeout: 10 * time.Minute}
		}, worker.PeriodicOpts{RunOnStart: true}))
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	// Output: report: all
}
