package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// The worker role: what a child process started by a fault test runs
// instead of the tests. It is a small production-like program: a pool, a
// worker.Worker, and signal.NotifyContext for SIGTERM, the way a container
// is stopped.

const (
	roleEnv   = "TASUKI_FAULT_ROLE"   // "worker" in a child process
	urlEnv    = "TASUKI_FAULT_URL"    // the pool's connection string
	nameEnv   = "TASUKI_FAULT_NAME"   // the worker's name in the executions table
	configEnv = "TASUKI_FAULT_CONFIG" // roleConfig as JSON
)

// roleConfig is the child's worker configuration, passed as JSON.
type roleConfig struct {
	Queue         string `json:"queue,omitempty"`
	Concurrency   int    `json:"concurrency,omitempty"`
	LeaseMS       int    `json:"lease_ms,omitempty"`
	HeartbeatMS   int    `json:"heartbeat_ms,omitempty"`
	PollMS        int    `json:"poll_ms,omitempty"`
	ShutdownMS    int    `json:"shutdown_ms,omitempty"`
	RetryMS       int    `json:"retry_ms,omitempty"`       // constant retry delay; 0: 100 ms
	RecordEnd     bool   `json:"record_end,omitempty"`     // also record when each handler returns
	MaxSleepMS    int    `json:"max_sleep_ms,omitempty"`   // caps every handler's sleep
	LifetimeMS    int    `json:"lifetime_ms,omitempty"`    // the process exits after this long whatever happens; 0: 3 min
	ListenURL     string `json:"listen_url,omitempty"`     // worker.Config.ListenURL
	DisableListen bool   `json:"disable_listen,omitempty"` // worker.Config.DisableListen
}

// faultJob is the payload of every job the fault tests insert.
type faultJob struct {
	// N numbers the job within its test.
	N int `json:"n"`
	// SleepMS is how long the handler works.
	SleepMS int `json:"sleep_ms,omitempty"`
	// FirstAttemptOnly: sleep only on the first attempt; a job rerun after
	// a fault finishes at once, so recovery times measure tasuki alone.
	FirstAttemptOnly bool `json:"first_attempt_only,omitempty"`
	// RespectCtx: the handler stops when its context ends (long work);
	// otherwise it ignores its context (short work).
	RespectCtx bool `json:"respect_ctx,omitempty"`
}

func (faultJob) Kind() string { return "fault" }

// executionsDDL is the side table every handler writes to when it starts:
// one row per execution, so a test counts how often each job ran.
const executionsDDL = `
CREATE TABLE executions (
    id          bigserial   PRIMARY KEY,
    job_id      bigint      NOT NULL,
    worker      text        NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome     text
)`

// runRole runs the worker role and returns the process's exit code.
func runRole() int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var cfg roleConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &cfg); err != nil {
		log.Error("role: bad config", slog.Any("error", err))
		return 2
	}
	// The test that started this process holds our stdin open; when it
	// ends, for whatever reason, stdin closes and so does this process.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprintln(os.Stderr, "role: stdin closed: the test is gone; exiting")
		os.Exit(3)
	}()
	lifetime := 3 * time.Minute
	if cfg.LifetimeMS > 0 {
		lifetime = ms(cfg.LifetimeMS)
	}
	time.AfterFunc(lifetime, func() {
		fmt.Fprintln(os.Stderr, "role: lifetime exceeded; exiting")
		os.Exit(4)
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(context.Background(), os.Getenv(urlEnv))
	if err != nil {
		log.Error("role: pool", slog.Any("error", err))
		return 2
	}
	defer pool.Close()

	r := &role{pool: pool, name: os.Getenv(nameEnv), cfg: cfg}
	retry := 100 * time.Millisecond
	if cfg.RetryMS > 0 {
		retry = ms(cfg.RetryMS)
	}
	w, err := worker.New(pool, worker.Config{
		Queue:             cfg.Queue,
		Concurrency:       cfg.Concurrency,
		LeaseDuration:     ms(cfg.LeaseMS),
		HeartbeatInterval: ms(cfg.HeartbeatMS),
		PollInterval:      ms(cfg.PollMS),
		ShutdownTimeout:   ms(cfg.ShutdownMS),
		RetryPolicy:       func(int) time.Duration { return retry },
		Logger:            log.With(slog.String("worker", r.name)),
		ListenURL:         cfg.ListenURL,
		DisableListen:     cfg.DisableListen,
	}, worker.Handle(worker.HandlerFunc[faultJob](r.work)))
	if err != nil {
		log.Error("role: worker", slog.Any("error", err))
		return 2
	}
	if err := w.Run(ctx); err != nil {
		log.Error("role: run", slog.Any("error", err))
		return 1
	}
	fmt.Fprintln(os.Stderr, "role: worker stopped cleanly")
	return 0
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

type role struct {
	pool *pgxpool.Pool
	name string
	cfg  roleConfig
}

// work records the execution, works for the job's sleep, and records how
// it ended.
func (r *role) work(ctx context.Context, job *tasuki.Job[faultJob]) error {
	// The record outlives a canceled handler context: an execution that
	// started is an execution, whatever happens next.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var execID int64
	if err := r.pool.QueryRow(rec,
		`INSERT INTO executions (job_id, worker, attempt) VALUES ($1, $2, $3) RETURNING id`,
		job.ID, r.name, job.Attempt).Scan(&execID); err != nil {
		return fmt.Errorf("record execution: %w", err)
	}
	sleep := job.Payload.SleepMS
	if job.Payload.FirstAttemptOnly && job.Attempt > 1 {
		sleep = 0
	}
	if r.cfg.MaxSleepMS > 0 {
		sleep = min(sleep, r.cfg.MaxSleepMS)
	}
	outcome := "returned"
	var err error
	if sleep > 0 {
		if job.Payload.RespectCtx {
			t := time.NewTimer(ms(sleep))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				outcome, err = "stopped: "+context.Cause(ctx).Error(), ctx.Err()
			}
		} else {
			time.Sleep(ms(sleep))
		}
	}
	if r.cfg.RecordEnd {
		// Best effort: a test that needs it waits for it.
		_, _ = r.pool.Exec(rec, `UPDATE executions SET finished_at = clock_timestamp(), outcome = $2 WHERE id = $1`,
			execID, outcome)
	}
	return err
}
