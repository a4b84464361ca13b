package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasukiq/tasuki/internal/maintenance"
	"github.com/tasukiq/tasuki/tasuki"
)

// Defaults of Config. Each is good without tuning.
const (
	// DefaultConcurrency is how many handlers run at once.
	DefaultConcurrency = 100
	// DefaultLeaseDuration is how long a lease lasts without a heartbeat: a
	// job whose worker died is run again about this long after.
	DefaultLeaseDuration = 30 * time.Second
	// DefaultPollInterval is how often an idle worker looks for jobs that
	// no notification announced (retries and delayed jobs coming due).
	DefaultPollInterval = time.Second
	// MinHeartbeatInterval is the shortest HeartbeatInterval: renewing
	// every lease more often only loads the database.
	MinHeartbeatInterval = 100 * time.Millisecond
	// DefaultShutdownTimeout is how long Run waits for running handlers
	// after its context ends before it cancels them. It leaves room within
	// the 30 s a Kubernetes pod gets between SIGTERM and SIGKILL.
	DefaultShutdownTimeout = 20 * time.Second
)

// RetryPolicy returns how long to wait before retrying a job whose attempt
// (counting from 1, up to the job's MaxAttempts, at most 2147483647)
// failed. A negative delay counts as 0: the job is retried at once.
type RetryPolicy func(attempt int) time.Duration

// MaxDefaultRetryDelay caps the delay of DefaultRetryPolicy: one day.
const MaxDefaultRetryDelay = 24 * time.Hour

// DefaultRetryPolicy waits attempt⁴ seconds, ±10 % at random so that jobs
// failing together do not retry together, and at most a day (±10 %): 1 s,
// 16 s, 81 s, 4 min 16 s, … 23 h 12 min after the 17th attempt and a day
// after each later one. With the default 25 attempts a job is retried for
// about 11 days before it fails.
func DefaultRetryPolicy(attempt int) time.Duration {
	// In float64 and capped before the conversion: attempt⁴ seconds
	// overflows a time.Duration from attempt 303 on.
	base := min(math.Pow(float64(max(attempt, 1)), 4), MaxDefaultRetryDelay.Seconds())
	jitter := 1 + (rand.Float64()*0.2 - 0.1)
	return time.Duration(base * jitter * float64(time.Second))
}

// retryDelay is the delay a policy or a handler asked for, made safe to
// store: never negative, and at most maxRetryDelay, beyond which the time
// of the retry would not be a valid PostgreSQL timestamp in every case.
func retryDelay(d time.Duration) time.Duration {
	return min(max(d, 0), maxRetryDelay)
}

// maxRetryDelay bounds any retry delay: 100 years.
const maxRetryDelay = 100 * 365 * 24 * time.Hour

// QueueConfig configures one queue of a worker. The zero value is valid.
type QueueConfig struct {
	// Concurrency is the most handlers of the queue's jobs that run at
	// once in the worker; it leases only as many of them as it has free
	// slots. At most 100000. Defaults to Config.Concurrency.
	Concurrency int
}

// Config configures a [Worker]. The zero value is valid: every field has a
// default.
type Config struct {
	// Queues are the queues to work, by name (1 to 128 characters each),
	// each with its concurrency. The worker leases from all of them, in
	// one statement, only jobs of the kinds it has handlers for. Defaults
	// to the one queue Queue.
	Queues map[string]QueueConfig
	// Queue is the one queue to work when Queues is empty. 1 to 128
	// characters. Defaults to "default". Not together with Queues.
	Queue string
	// Concurrency is the most handlers that run at once in each queue
	// without a Concurrency of its own. At most 100000. Defaults to 100.
	Concurrency int
	// LeaseDuration is how long a leased job stays reserved for this worker
	// without a heartbeat. At least 1 s. Defaults to 30 s.
	LeaseDuration time.Duration
	// HeartbeatInterval is how often the worker renews the leases of all
	// its running jobs, in one statement. At least 100 ms and at most half
	// of LeaseDuration, so that a failed renewal is tried again before the
	// lease lapses. Defaults to a third of LeaseDuration. However short,
	// each renewal gets a quarter of LeaseDuration to answer; a handler
	// whose lease could not be renewed is canceled (ErrLeaseLost) when less
	// than a quarter of the lease is left, before another worker can take
	// the job.
	HeartbeatInterval time.Duration
	// PollInterval is how long an idle worker waits for a notification
	// before it looks for runnable jobs anyway. At least 10 ms. Defaults to
	// 1 s.
	PollInterval time.Duration
	// ShutdownTimeout is how long Run waits for running handlers once its
	// context ends; then it cancels their contexts, and jobs that did not
	// finish go back to pending with their attempt given back. Defaults to
	// 20 s. Set to -1 to cancel handlers at once.
	ShutdownTimeout time.Duration
	// RetryPolicy chooses the delay before a failed job's next attempt.
	// Negative delays count as 0. Defaults to DefaultRetryPolicy.
	RetryPolicy RetryPolicy
	// Logger receives the worker's logs. Payloads are never logged.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// CleanInterval is how often the worker's retention cleaner looks for
	// finished jobs past their queue's retention, in every queue. With many
	// workers, one at a time cleans (an advisory lock elects it each
	// round). How long a queue keeps its jobs is a setting of the queue in
	// the database, the same for every process: see tasuki.Retention and
	// tasuki.Admin.SetRetention. At least 10 ms. Defaults to 1 minute.
	CleanInterval time.Duration
	// ListenURL is the connection string of the one connection the worker
	// keeps for LISTEN. Defaults to the pool's own. Set it when the pool
	// goes through a pooler in transaction mode (PgBouncer), which cannot
	// keep a LISTEN: point it at PostgreSQL directly.
	ListenURL string
	// DisableListen turns LISTEN off: the worker finds new jobs by polling
	// alone, every PollInterval, and cancellations reach running handlers
	// at the next heartbeat. Defaults to false. For poolers in transaction
	// mode when no direct connection is available.
	DisableListen bool
	// Middleware wraps the handling of every job the worker runs, of
	// every kind: see Middleware. The first is outermost; a kind's own
	// (KindConfig.Middleware) run inside these. Defaults to none.
	Middleware []Middleware
	// ErrorHandler is told of every failed attempt and panic: see
	// ErrorHandler. Defaults to nil: failures are logged only.
	ErrorHandler ErrorHandler
	// Events receives what happens to the jobs the worker runs (completed,
	// failed, retried, snoozed, canceled, given back at shutdown), once
	// the outcome is recorded; and an EventInserted for each periodic job
	// it inserts. See tasuki.Events. Defaults to nil: none are published.
	Events *tasuki.Events
	// InsertMiddleware wraps the inserts of periodic jobs (see Periodic),
	// as tasuki.ClientConfig.InsertMiddleware wraps a client's. Defaults
	// to none.
	InsertMiddleware []tasuki.InsertMiddleware
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Concurrency == 0:
		c.Concurrency = DefaultConcurrency
	case c.Concurrency < 0 || c.Concurrency > 100_000:
		return c, &tasuki.InvalidOptionError{Option: "Config.Concurrency", Value: c.Concurrency, Reason: "must be between 1 and 100000 (0 means the default, 100)"}
	}
	if len(c.Queues) > 0 && c.Queue != "" {
		return c, &tasuki.InvalidOptionError{Option: "Config.Queue", Value: c.Queue, Reason: "set Queue (one queue) or Queues, not both"}
	}
	if len(c.Queues) == 0 {
		if c.Queue == "" {
			c.Queue = tasuki.DefaultQueue
		}
		if err := tasuki.ValidateQueue("Config.Queue", c.Queue); err != nil {
			return c, err
		}
		c.Queues = map[string]QueueConfig{c.Queue: {}}
	}
	queues := make(map[string]QueueConfig, len(c.Queues)) // the caller's map stays as it was
	total := 0
	for name, q := range c.Queues {
		option := fmt.Sprintf("Config.Queues[%q]", name)
		if err := tasuki.ValidateQueue(option, name); err != nil {
			return c, err
		}
		switch {
		case q.Concurrency == 0:
			q.Concurrency = c.Concurrency
		case q.Concurrency < 0 || q.Concurrency > 100_000:
			return c, &tasuki.InvalidOptionError{Option: option + ".Concurrency", Value: q.Concurrency, Reason: "must be between 1 and 100000 (0 means Config.Concurrency)"}
		}
		total += q.Concurrency
		queues[name] = q
	}
	if total > 100_000 {
		return c, &tasuki.InvalidOptionError{Option: "Config.Queues", Value: total, Reason: "the queues' concurrency adds up to more than 100000"}
	}
	c.Queues = queues
	switch {
	case c.LeaseDuration == 0:
		c.LeaseDuration = DefaultLeaseDuration
	case c.LeaseDuration < time.Second:
		return c, &tasuki.InvalidOptionError{Option: "Config.LeaseDuration", Value: c.LeaseDuration, Reason: "must be at least 1s (0 means the default, 30s)"}
	}
	switch {
	case c.HeartbeatInterval == 0:
		c.HeartbeatInterval = c.LeaseDuration / 3
	case c.HeartbeatInterval < MinHeartbeatInterval || c.HeartbeatInterval > c.LeaseDuration/2:
		return c, &tasuki.InvalidOptionError{Option: "Config.HeartbeatInterval", Value: c.HeartbeatInterval,
			Reason: fmt.Sprintf("must be between 100ms and half of LeaseDuration (%s); 0 means a third of it", c.LeaseDuration/2)}
	}
	switch {
	case c.CleanInterval == 0:
		c.CleanInterval = maintenance.DefaultCleanInterval
	case c.CleanInterval < 10*time.Millisecond:
		return c, &tasuki.InvalidOptionError{Option: "Config.CleanInterval", Value: c.CleanInterval, Reason: "must be at least 10ms (0 means the default, 1m)"}
	}
	switch {
	case c.PollInterval == 0:
		c.PollInterval = DefaultPollInterval
	case c.PollInterval < 10*time.Millisecond:
		return c, &tasuki.InvalidOptionError{Option: "Config.PollInterval", Value: c.PollInterval, Reason: "must be at least 10ms (0 means the default, 1s)"}
	}
	switch {
	case c.ShutdownTimeout == 0:
		c.ShutdownTimeout = DefaultShutdownTimeout
	case c.ShutdownTimeout == -1:
	case c.ShutdownTimeout < 0:
		return c, &tasuki.InvalidOptionError{Option: "Config.ShutdownTimeout", Value: c.ShutdownTimeout, Reason: "must be positive, 0 for the default (20s) or -1 to cancel handlers at once"}
	}
	if c.ListenURL != "" {
		if err := parseConnString(c.ListenURL); err != nil {
			return c, &tasuki.InvalidOptionError{Option: "Config.ListenURL", Value: "(not shown: may hold a password)", Reason: "not a valid connection string: " + err.Error()}
		}
		if c.DisableListen {
			return c, &tasuki.InvalidOptionError{Option: "Config.ListenURL", Value: "(not shown: may hold a password)", Reason: "set ListenURL or DisableListen, not both"}
		}
	}
	for i, m := range c.InsertMiddleware {
		if m == nil {
			return c, &tasuki.InvalidOptionError{Option: fmt.Sprintf("Config.InsertMiddleware[%d]", i), Value: nil, Reason: "an insert middleware is nil"}
		}
	}
	if c.RetryPolicy == nil {
		c.RetryPolicy = DefaultRetryPolicy
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// parseConnString checks a connection string. It recovers from a panic in
// the parser, which some malformed strings cause.
func parseConnString(s string) (err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("malformed connection string")
		}
	}()
	_, err = pgx.ParseConfig(s)
	return err
}
