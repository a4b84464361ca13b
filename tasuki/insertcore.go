package tasuki

// What inserting jobs needs whatever the payload's Go type: the defaults
// and checks of ClientConfig and InsertOpts, the JSON a payload is stored
// as, the COPY of a batch and the wake-ups after it. Client[T] and
// Inserter both insert through these, so that a job is stored the same
// way by either.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/waker"
)

// checkClientConfig applies ClientConfig's defaults, but for Kind, and
// checks it: an invalid field gives an *InvalidOptionError.
func checkClientConfig(pool *pgxpool.Pool, cfg ClientConfig) (ClientConfig, error) {
	if pool == nil {
		return cfg, &InvalidOptionError{Option: "pool", Value: nil, Reason: "a *pgxpool.Pool is required"}
	}
	if err := checkInsertMiddleware("ClientConfig.InsertMiddleware", cfg.InsertMiddleware); err != nil {
		return cfg, err
	}
	if cfg.Queue == "" {
		cfg.Queue = DefaultQueue
	}
	if err := ValidateQueue("ClientConfig.Queue", cfg.Queue); err != nil {
		return cfg, err
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if err := validateMaxAttempts("ClientConfig.MaxAttempts", cfg.MaxAttempts); err != nil {
		return cfg, err
	}
	switch {
	case cfg.MaxPayloadBytes == 0:
		cfg.MaxPayloadBytes = DefaultMaxPayloadBytes
	case cfg.MaxPayloadBytes < -1:
		return cfg, &InvalidOptionError{Option: "ClientConfig.MaxPayloadBytes", Value: cfg.MaxPayloadBytes, Reason: "must be positive, 0 for the default (1 MiB) or -1 for no limit"}
	}
	return cfg, nil
}

// resolveInsertOpts checks opts and applies cfg's defaults (cfg as
// checkClientConfig returns it) to what opts leave unset.
func resolveInsertOpts(cfg ClientConfig, opts *InsertOpts) (insertion, error) {
	in := insertion{queue: cfg.Queue, maxAttempts: int32(cfg.MaxAttempts), metadata: emptyMetadata}
	if opts == nil {
		return in, nil
	}
	if opts.Metadata != nil {
		b, err := encodeMetadata(opts.Metadata)
		if err != nil {
			return in, err
		}
		in.metadata = b
	}
	if opts.Timeout < 0 || opts.Timeout%time.Millisecond != 0 || (opts.Timeout > 0 && opts.Timeout < time.Millisecond) {
		return in, &InvalidOptionError{Option: "InsertOpts.Timeout", Value: opts.Timeout, Reason: "must be 0 (the kind's timeout) or a positive whole number of milliseconds"}
	}
	if opts.Timeout > 0 {
		in.timeout = pgtype.Int8{Int64: opts.Timeout.Milliseconds(), Valid: true}
	}
	u, err := checkUnique(opts.Unique)
	if err != nil {
		return in, err
	}
	in.unique = u
	if opts.Queue != "" {
		if err := ValidateQueue("InsertOpts.Queue", opts.Queue); err != nil {
			return in, err
		}
		in.queue = opts.Queue
	}
	if opts.Priority < 0 || opts.Priority > MaxPriority {
		return in, &InvalidOptionError{Option: "InsertOpts.Priority", Value: opts.Priority, Reason: "must be between 0 (most urgent, the default) and 32767"}
	}
	in.priority = int16(opts.Priority)
	if opts.MaxAttempts != 0 {
		if err := validateMaxAttempts("InsertOpts.MaxAttempts", opts.MaxAttempts); err != nil {
			return in, err
		}
		in.maxAttempts = int32(opts.MaxAttempts)
	}
	if opts.Delay < 0 {
		return in, &InvalidOptionError{Option: "InsertOpts.Delay", Value: opts.Delay, Reason: "must not be negative"}
	}
	if opts.Delay > 0 && !opts.RunAt.IsZero() {
		return in, &InvalidOptionError{Option: "InsertOpts.RunAt", Value: opts.RunAt, Reason: "set RunAt or Delay, not both"}
	}
	in.delay = opts.Delay
	if !opts.RunAt.IsZero() && (opts.RunAt.Before(minRunAt) || !opts.RunAt.Before(endRunAt)) {
		return in, &InvalidOptionError{Option: "InsertOpts.RunAt", Value: opts.RunAt, Reason: "must be within PostgreSQL's timestamptz range, 4714 BC to 294276 AD"}
	}
	if !opts.RunAt.IsZero() {
		t := opts.RunAt
		in.runAt = &t
	}
	return in, nil
}

// emptyMetadata is the metadata of a job inserted without any.
var emptyMetadata = []byte("{}")

// MaxMetadataBytes is the largest encoded InsertOpts.Metadata accepted.
const MaxMetadataBytes = 64 << 10

// encodeMetadata turns InsertOpts.Metadata into the JSON object stored.
func encodeMetadata(m map[string]any) ([]byte, error) {
	// The error names the metadata's size and keys, never its values: it
	// may hold trace contexts or secrets, and be large.
	value := fmt.Sprintf("(a map of %d keys)", len(m))
	b, err := json.Marshal(m)
	if err != nil {
		return nil, &InvalidOptionError{Option: "InsertOpts.Metadata", Value: value, Reason: "must encode as JSON: " + oneLineErr(err)}
	}
	if len(b) > MaxMetadataBytes {
		return nil, &InvalidOptionError{Option: "InsertOpts.Metadata", Value: fmt.Sprintf("(%d bytes encoded)", len(b)), Reason: fmt.Sprintf("must encode to at most %d bytes", MaxMetadataBytes)}
	}
	if reason := unstorableJSON(b); reason != "" {
		return nil, &InvalidOptionError{Option: "InsertOpts.Metadata", Value: value, Reason: reason}
	}
	return b, nil
}

// oneLineErr is err's text cut to 200 bytes: encoding/json quotes the
// values it could not encode.
func oneLineErr(err error) string {
	msg := err.Error()
	if len(msg) > 200 {
		msg = strings.ToValidUTF8(msg[:200], "") + "…"
	}
	return msg
}

// encodePayload turns a payload into the JSON that will be stored. typ
// names its Go type for errors; maxBytes is ClientConfig.MaxPayloadBytes
// as checked (-1: no limit).
func encodePayload(payload any, typ string, maxBytes int) ([]byte, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, &InvalidPayloadError{Type: typ, Reason: "it does not encode to JSON", Err: err}
	}
	if maxBytes > 0 && len(b) > maxBytes {
		return nil, &InvalidPayloadError{Type: typ, Reason: fmt.Sprintf("it encodes to %d bytes, over the limit of %d (ClientConfig.MaxPayloadBytes)", len(b), maxBytes)}
	}
	if reason := unstorableJSON(b); reason != "" {
		return nil, &InvalidPayloadError{Type: typ, Reason: reason}
	}
	return b, nil
}

// copier inserts prepared jobs with one COPY and wakes their workers once
// the jobs committed: what Client.InsertMany and Inserter.InsertMany
// share, with their Tx forms. Client and Inserter embed it.
type copier struct {
	pool    *pgxpool.Pool
	queries *db.Queries
	waker   *waker.Waker
	// events and mws are ClientConfig.Events and .InsertMiddleware.
	events *Events
	mws    []InsertMiddleware
}

func newCopier(pool *pgxpool.Pool, cfg ClientConfig) copier {
	return copier{pool: pool, queries: db.New(pool), waker: waker.New(pool), events: cfg.Events, mws: cfg.InsertMiddleware}
}

// insertParams inserts the jobs params describe through the insert
// middleware, with one COPY, in tx when it is not nil and in a
// transaction of its own otherwise. Each job is checked as the middleware
// left it.
func (c copier) insertParams(ctx context.Context, tx pgx.Tx, cfg ClientConfig, params []*InsertParams) (int64, error) {
	// The kinds and payloads are read only: what middleware does to them
	// is not inserted.
	kinds := make([]string, len(params))
	payloads := make([][]byte, len(params))
	for i, p := range params {
		kinds[i], payloads[i] = p.Kind, p.Payload
	}
	var n int64
	err := runInsertMiddleware(ctx, c.mws, params, func(ctx context.Context) error {
		rows := make([]db.JobInsertCopyParams, len(params))
		ins := make([]insertion, len(params))
		for i, p := range params {
			in, err := resolveInsertOpts(cfg, &p.Opts)
			if err != nil {
				return fmt.Errorf("tasuki: job %d of %d, with the options insert middleware left it: %w", i, len(params), err)
			}
			rows[i] = rowOf(kinds[i], payloads[i], in)
			ins[i] = in
		}
		res, err := c.copyMany(ctx, tx, rows, ins)
		if err != nil {
			return err
		}
		n = res.n
		if len(res.uniqueRows) == 0 {
			return nil // COPY reports no ids
		}
		// Unique jobs get their ids, or are marked duplicates.
		ids := make(map[string]int64, len(res.unique))
		for _, r := range res.unique {
			ids[string(r.UniqueKey)] = r.ID
		}
		for j, i := range res.uniqueRows {
			key := string(res.uniqueKeys[j])
			if id, ok := ids[key]; ok {
				params[i].ID = id
				delete(ids, key) // a second job of the batch with the key is its duplicate
			} else {
				params[i].Duplicate = true
			}
		}
		return nil
	})
	return n, err
}

// rowOf is the row COPY inserts for a job of kind with payload b,
// inserted as in asks.
func rowOf(kind string, b []byte, in insertion) db.JobInsertCopyParams {
	return db.JobInsertCopyParams{Queue: in.queue, Kind: kind, Priority: in.priority, Payload: b, MaxAttempts: in.maxAttempts, Metadata: in.metadata, TimeoutMs: in.timeout}
}

// published reports the jobs res inserted to the subscribers of events.
func (c copier) published(res copiedRows) {
	if !c.events.Active() {
		return
	}
	now := time.Now()
	for _, r := range res.plain {
		c.events.Publish(Event{Type: EventInserted, Kind: r.Kind, Queue: r.Queue, At: now})
	}
	for _, r := range res.unique {
		c.events.Publish(Event{Type: EventInserted, JobID: r.ID, Kind: r.Kind, Queue: r.Queue, At: now})
	}
}

// insertMany COPYs rows, the job of rows[i] inserted as ins[i] asks, in a
// transaction of its own, and wakes the workers after its commit.
func (c copier) insertMany(ctx context.Context, rows []db.JobInsertCopyParams, ins []insertion) (int64, error) {
	res, err := c.copyMany(ctx, nil, rows, ins)
	return res.n, err
}

// insertManyTx is insertMany inside the caller's transaction tx: the
// workers are woken once tx commits.
func (c copier) insertManyTx(ctx context.Context, tx pgx.Tx, rows []db.JobInsertCopyParams, ins []insertion) (int64, error) {
	res, err := c.copyMany(ctx, tx, rows, ins)
	return res.n, err
}

// copyMany is insertMany (tx nil) or insertManyTx, with what copyRows
// says.
func (c copier) copyMany(ctx context.Context, tx pgx.Tx, rows []db.JobInsertCopyParams, ins []insertion) (copiedRows, error) {
	var res copiedRows
	if len(rows) == 0 {
		return res, nil
	}
	if tx == nil {
		err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
			var err error
			res, err = copyRows(ctx, c.queries.WithTx(tx), rows, ins)
			return err
		})
		if err != nil {
			return copiedRows{}, dberr.Wrap("tasuki: insert jobs", err)
		}
		wakeSoon(c.waker, res.wakes)
	} else {
		var err error
		if res, err = copyRows(ctx, c.queries.WithTx(tx), rows, ins); err != nil {
			return copiedRows{}, dberr.Wrap("tasuki: insert jobs", err)
		}
		if err := wakeAfterTx(ctx, c.waker, c.pool, tx, res.xact, res.wakes); err != nil {
			return copiedRows{}, dberr.Wrap("tasuki: insert jobs", err)
		}
	}
	c.published(res)
	return res, nil
}

// wake is one queue to wake and where the jobs announced begin in it.
type wake struct {
	target waker.Target
	head   waker.Head
}

// copiedRows is the result of copyRows.
type copiedRows struct {
	n      int64
	xact   int64 // the inserting transaction
	schema string
	// wakes are the queues that got jobs runnable at once, with the
	// earliest head of each kind and priority: the wake-ups to send once
	// the transaction committed. None when every job is scheduled later.
	wakes []wake
	// plain are the rows COPY inserted; unique the unique jobs inserted.
	plain  []db.JobInsertCopyParams
	unique []*db.JobInsertUniqueManyRow
	// uniqueRows are the indexes of the unique jobs among the rows given,
	// and uniqueKeys their keys.
	uniqueRows []int
	uniqueKeys [][]byte
}

// copyRows COPYs rows, the job of rows[i] inserted as ins[i] asks, and
// says whom to wake. It runs in a transaction: the caller's, or one of its
// own.
func copyRows(ctx context.Context, q *db.Queries, rows []db.JobInsertCopyParams, ins []insertion) (copiedRows, error) {
	// COPY cannot compute a default from a parameter, so the scheduled
	// times are fixed here, from the database clock.
	now, err := q.DatabaseNow(ctx, nil)
	if err != nil {
		return copiedRows{}, err
	}
	type headKey struct {
		queue, kind string
		priority    int16
	}
	heads := make(map[headKey]time.Time)
	// Unique jobs are inserted apart: COPY cannot skip the ones that meet
	// an existing job.
	var unique db.JobInsertUniqueManyParams
	var uniqueRows []int
	plain := rows
	for i := range rows {
		at := ins[i].scheduledAt(now.Now)
		rows[i].ScheduledAt = at
		if ins[i].unique != nil {
			if len(unique.Queues) == 0 {
				plain = make([]db.JobInsertCopyParams, 0, len(rows))
				plain = append(plain, rows[:i]...)
			}
			key, err := ins[i].uniqueKey(rows[i].Kind, rows[i].Payload, at)
			if err != nil {
				return copiedRows{}, fmt.Errorf("payload %d of %d: %w", i, len(rows), err)
			}
			addUnique(&unique, &rows[i], key, ins[i].unique.statuses)
			uniqueRows = append(uniqueRows, i)
		} else if len(unique.Queues) > 0 {
			plain = append(plain, rows[i])
		}
		if at.After(now.Now) {
			continue // the workers find it when it is due
		}
		k := headKey{ins[i].queue, rows[i].Kind, ins[i].priority}
		if first, ok := heads[k]; !ok || at.Before(first) {
			heads[k] = at
		}
	}
	var n int64
	if len(plain) > 0 {
		n, err = q.JobInsertCopy(ctx, plain)
		if err != nil {
			return copiedRows{}, err
		}
	}
	var inserted []*db.JobInsertUniqueManyRow
	if len(unique.Queues) > 0 {
		inserted, err = q.JobInsertUniqueMany(ctx, unique)
		if err != nil {
			return copiedRows{}, err
		}
		n += int64(len(inserted))
	}
	res := copiedRows{n: n, xact: now.XactID, schema: now.Schema, wakes: make([]wake, 0, len(heads)),
		plain: plain, unique: inserted, uniqueRows: uniqueRows, uniqueKeys: unique.UniqueKeys}
	for k, at := range heads {
		res.wakes = append(res.wakes, wake{
			target: waker.Target{Schema: now.Schema, Queue: k.queue},
			head:   waker.Head{Kind: k.kind, Priority: k.priority, ScheduledAt: at},
		})
	}
	return res, nil
}

// addUnique adds the unique job r with its key and unique statuses to p.
func addUnique(p *db.JobInsertUniqueManyParams, r *db.JobInsertCopyParams, key []byte, statuses int16) {
	p.Queues = append(p.Queues, r.Queue)
	p.Kinds = append(p.Kinds, r.Kind)
	p.Priorities = append(p.Priorities, r.Priority)
	p.Payloads = append(p.Payloads, string(r.Payload))
	p.MaxAttempts = append(p.MaxAttempts, r.MaxAttempts)
	p.ScheduledAt = append(p.ScheduledAt, r.ScheduledAt)
	p.Metadata = append(p.Metadata, string(r.Metadata))
	p.UniqueKeys = append(p.UniqueKeys, key)
	p.UniqueStatuses = append(p.UniqueStatuses, statuses)
	p.TimeoutsMs = append(p.TimeoutsMs, r.TimeoutMs.Int64) // 0 when NULL: the kind's
}

// wakeSoon has the workers of each of wakes woken, after a commit that
// already happened.
func wakeSoon(w *waker.Waker, wakes []wake) {
	for _, wk := range wakes {
		w.WakeSoon(wk.target, wk.head)
	}
}

// wakeAfterTx has the workers of each of wakes woken once the caller's
// transaction tx (xact) commits: by w, which follows the transaction,
// when tx's connection goes to the same server and database as pool;
// otherwise by a NOTIFY per queue inside tx, as w's notifications would
// reach another database's workers. It asks the database nothing more: a
// caller's transactions may hold every connection of the pool.
func wakeAfterTx(ctx context.Context, w *waker.Waker, pool *pgxpool.Pool, tx pgx.Tx, xact int64, wakes []wake) error {
	if len(wakes) == 0 {
		return nil
	}
	if conn := tx.Conn(); conn != nil {
		a, b := conn.Config(), pool.Config().ConnConfig
		if a.Host == b.Host && a.Port == b.Port && a.Database == b.Database {
			for _, wk := range wakes {
				w.Watch(xact, wk.target, wk.head)
			}
			return nil
		}
	}
	q := db.New(tx)
	notified := make(map[string]bool, len(wakes))
	for _, wk := range wakes {
		if notified[wk.target.Queue] {
			continue
		}
		notified[wk.target.Queue] = true
		if err := q.NotifyInsert(ctx, wk.target.Queue); err != nil {
			return err
		}
	}
	return nil
}
