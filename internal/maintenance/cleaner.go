// Package maintenance runs the upkeep a tasuki database needs in the
// background. Its Cleaner deletes finished jobs once they are older than a
// retention period, so that the job table does not grow without end.
//
// Every worker process may run a Cleaner: an advisory lock elects one of
// them per round, and another takes over at its next round when that one
// stops, crashes or loses its connection.
package maintenance

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/setaside"
	"github.com/tasukiq/tasuki/tasuki"
)

// Defaults of CleanerConfig.
const (
	// DefaultCleanInterval is how often a Cleaner looks for jobs to delete.
	DefaultCleanInterval = time.Minute
	// DefaultBatchSize is how many jobs one statement deletes.
	DefaultBatchSize = tasuki.DefaultCleanBatchSize
)

// CleanerConfig configures a [Cleaner]. The zero value is valid: every
// field has a default. How long jobs are kept is not configured here: it
// is a setting of each queue, in the database (tasuki.Admin.SetRetention),
// so that every process cleans a queue by the same rule.
type CleanerConfig struct {
	// Interval is how often the Cleaner runs a round. At least 10 ms.
	// Defaults to 1 minute.
	Interval time.Duration
	// BatchSize is the most jobs one statement, in its own short
	// transaction, deletes: 1 to 100000. Defaults to 1000.
	BatchSize int
	// Logger receives the Cleaner's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Gate, when set, is entered before each of the Cleaner's statements
	// and left after it: a worker uses it to keep its statements to one at
	// a time while it is idle. An error from it (its ctx ended) ends the
	// round. Defaults to none.
	Gate func(ctx context.Context) (leave func(), err error)
}

func (c CleanerConfig) withDefaults() (CleanerConfig, error) {
	switch {
	case c.Interval == 0:
		c.Interval = DefaultCleanInterval
	case c.Interval < 10*time.Millisecond:
		return c, &tasuki.InvalidOptionError{Option: "CleanerConfig.Interval", Value: c.Interval, Reason: "must be at least 10ms (0 means the default, 1m)"}
	}
	switch {
	case c.BatchSize == 0:
		c.BatchSize = DefaultBatchSize
	case c.BatchSize < 0 || c.BatchSize > tasuki.MaxCleanBatchSize:
		return c, &tasuki.InvalidOptionError{Option: "CleanerConfig.BatchSize", Value: c.BatchSize, Reason: "must be between 1 and 100000 (0 means the default, 1000)"}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Cleaner deletes finished jobs older than their queue's retention for
// their status (tasuki.Retention; a queue without a setting keeps the
// defaults: 24 h for completed jobs, 7 days for canceled and failed). Many
// processes may run one against the same database: in each batch it first
// takes a transaction-scoped advisory lock, and when another process holds
// it, that process is cleaning and this one skips the round. The lock ends
// with its transaction, or with its connection if the process dies, so
// another process takes over at its next round. Installations in different
// schemas of one database clean independently.
type Cleaner struct {
	pool    *pgxpool.Pool
	queries *db.Queries
	cfg     CleanerConfig

	mu      sync.Mutex    // one round at a time
	refused *setaside.Set // jobs the database refused to delete
}

// NewCleaner returns a Cleaner that uses pool. The configuration is checked
// here; an invalid one returns a *tasuki.InvalidOptionError.
func NewCleaner(pool *pgxpool.Pool, cfg CleanerConfig) (*Cleaner, error) {
	if pool == nil {
		return nil, &tasuki.InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Cleaner{pool: pool, queries: db.New(pool), cfg: cfg,
		refused: setaside.New(min(cfg.Interval, setaside.DefaultMaxWait), setaside.DefaultMaxWait)}, nil
}

// Config returns the Cleaner's configuration with the defaults filled in.
func (c *Cleaner) Config() CleanerConfig { return c.cfg }

// Run runs a round at once and then every Interval until ctx ends, and
// returns nil then. A failed round is logged and retried at the next one;
// only a database without tasuki's schema ends Run early, with an error
// wrapping tasuki.ErrSchemaMissing.
func (c *Cleaner) Run(ctx context.Context) error {
	ticker := time.NewTicker(c.cfg.Interval)
	defer ticker.Stop()
	for {
		deleted, err := c.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, tasuki.ErrSchemaMissing):
			return err
		case err != nil:
			c.cfg.Logger.Warn("tasuki: cleaning finished jobs failed; retrying at the next round",
				slog.Any("error", err), slog.Int64("deleted", deleted), slog.Duration("retry_in", c.cfg.Interval))
		case deleted > 0:
			c.cfg.Logger.Info("tasuki: deleted finished jobs past their retention", slog.Int64("deleted", deleted))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// RunOnce runs one round: it deletes, in batches, every completed, canceled
// and failed job of every queue that finished longer ago than that queue's
// retention, by the database clock, and returns how many it deleted, also
// when it fails midway. When another process is cleaning it deletes
// nothing. An idle round is one statement.
//
// A job the database refuses to delete (a foreign key of the application's
// that references it, a trigger) does not stop the cleaning: the batch is
// deleted one job at a time, and the refused job is left out of later
// rounds for a while, then tried again, logged at each try.
func (c *Cleaner) RunOnce(ctx context.Context) (deleted int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	params := db.JobCleanRetainedParams{
		CompletedUs: tasuki.DefaultCompletedRetention.Microseconds(),
		CanceledUs:  tasuki.DefaultCanceledRetention.Microseconds(),
		FailedUs:    tasuki.DefaultFailedRetention.Microseconds(),
		Max:         int32(c.cfg.BatchSize),
	}
	for {
		params.SkipIds, params.ListOnly, params.OnlyIds = c.refused.Skip(time.Now()), false, []int64{}
		c.refused.ForgetStale(time.Now())
		ids, err := c.clean(ctx, params)
		if dberr.RowError(err) {
			params.ListOnly = true
			if ids, err = c.clean(ctx, params); err == nil {
				var n int64
				n, err = c.deleteEach(ctx, params, ids)
				deleted += n
				if err == nil && len(ids) == int(params.Max) {
					continue
				}
				return deleted, err
			}
		}
		deleted += int64(len(ids))
		if err != nil {
			return deleted, dberr.Wrap("tasuki: cleaner: delete finished jobs", err)
		}
		if len(ids) < int(params.Max) {
			return deleted, nil
		}
	}
}

// clean runs one JobCleanRetained statement, inside the Gate if one is set.
func (c *Cleaner) clean(ctx context.Context, params db.JobCleanRetainedParams) ([]int64, error) {
	if c.cfg.Gate != nil {
		leave, err := c.cfg.Gate(ctx)
		if err != nil {
			return nil, err
		}
		defer leave()
	}
	return c.queries.JobCleanRetained(ctx, params)
}

// deleteEach deletes finished jobs one statement each, after the database
// refused to delete them as a batch, and sets aside the ones it refuses.
// Each statement checks the job against its queue's retention again, under
// the cleaner's lock: a job retried meanwhile, or whose queue now keeps it,
// stays.
func (c *Cleaner) deleteEach(ctx context.Context, params db.JobCleanRetainedParams, ids []int64) (deleted int64, err error) {
	params.ListOnly, params.SkipIds, params.Max = false, []int64{}, 1
	for _, id := range ids {
		params.OnlyIds = []int64{id}
		gone, err := c.clean(ctx, params)
		switch {
		case err == nil:
			// Deleted, or no longer due (retried, kept, deleted by
			// another process): nothing to remember either way.
			deleted += int64(len(gone))
			c.refused.Accepted(id)
		case dberr.RowError(err):
			wait := c.refused.Refuse(id, time.Now())
			c.cfg.Logger.Error("tasuki: cleaner: the database refused to delete a finished job; the others are deleted, and this one is tried again later",
				slog.Int64("job_id", id), slog.Any("error", dberr.Wrap("delete", err)), slog.Duration("retry_in", wait))
		default:
			return deleted, dberr.Wrap("tasuki: cleaner: delete finished jobs", err)
		}
	}
	return deleted, nil
}
