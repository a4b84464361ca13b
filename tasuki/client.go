package tasuki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/waker"
)

// Defaults of ClientConfig and InsertOpts.
const (
	// DefaultQueue is the queue used when none is configured.
	DefaultQueue = "default"
	// DefaultMaxAttempts is the number of attempts a job gets by default.
	DefaultMaxAttempts = 25
	// DefaultMaxPayloadBytes is the largest encoded payload a client
	// accepts by default: 1 MiB.
	DefaultMaxPayloadBytes = 1 << 20
	// MaxQueueLength is the longest queue name, in characters.
	MaxQueueLength = 128
	// MaxPriority is the largest priority (the least urgent).
	MaxPriority = 32767
)

// PostgreSQL's timestamptz range: from 4714-11-24 BC (Go's year -4713) up
// to, not including, 294277-01-01 AD.
var (
	minRunAt = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	endRunAt = time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ClientConfig configures a [Client]. The zero value is valid.
type ClientConfig struct {
	// Queue is the queue jobs go to unless InsertOpts.Queue, or the payload
	// type's defaults (DefaultOpts), say otherwise. 1 to 128 characters.
	// Defaults to "default".
	Queue string
	// MaxAttempts is the number of attempts a job gets unless
	// InsertOpts.MaxAttempts, or the payload type's defaults, say
	// otherwise. At least 1. Defaults to 25.
	MaxAttempts int
	// Kind is the kind of the jobs the client inserts: see Kinder.
	// Defaults to what T's Kind method returns; set it for a payload type
	// without one (a type of another package, say). One of the two is
	// required.
	Kind string
	// MaxPayloadBytes is the largest encoded payload accepted. Defaults to
	// 1 MiB. Set to -1 for no limit beyond PostgreSQL's own (255 MiB for
	// jsonb).
	MaxPayloadBytes int
	// InsertMiddleware wraps every insert of the client (or inserter),
	// bulk inserts included: see InsertMiddleware. The first is
	// outermost. Share one slice among a process's clients for
	// middleware of the whole process; give a client of one payload type
	// its own for that kind (or see InsertMiddlewareFor). Defaults to
	// none.
	InsertMiddleware []InsertMiddleware
	// Events receives an EventInserted for every job the client inserts:
	// see Events. Defaults to nil: none are published.
	Events *Events
}

// InsertOpts adjust one insertion. A nil *InsertOpts uses the client's
// defaults.
type InsertOpts struct {
	// Queue overrides the client's queue. 1 to 128 characters.
	Queue string
	// Priority orders runnable jobs: lower runs first. 0 to 32767.
	// Defaults to 0, the most urgent.
	Priority int
	// RunAt schedules the job for a time. Zero means now. Not together with
	// Delay.
	RunAt time.Time
	// Delay schedules the job this long after now, by the database clock.
	// Not negative; not together with RunAt. Defaults to 0.
	Delay time.Duration
	// MaxAttempts overrides the client's max attempts. At least 1.
	MaxAttempts int
	// Metadata is kept with the job as a JSON object, for the handler
	// (Job.Metadata), Admin and middleware: tags, a trace context, who
	// asked for the job. Its values must encode as JSON that PostgreSQL
	// stores (see InvalidPayloadError); at most 64 KiB encoded. Defaults
	// to none: "{}".
	Metadata map[string]any
	// Unique makes the insert unique: see UniqueOpts. Defaults to nil: a
	// job is inserted every time.
	Unique *UniqueOpts
	// Timeout is how long one attempt of the job may run, in place of its
	// kind's worker.KindConfig.Timeout: see there. Whole milliseconds, at
	// least 1 ms. Defaults to 0: the kind's timeout.
	Timeout time.Duration
}

// Client inserts and reads jobs whose payload is a T, encoded as JSON. It is
// safe for concurrent use.
type Client[T any] struct {
	copier
	cfg  ClientConfig
	kind string
	// defaults are T's default insert options (DefaultOpts), or nil.
	defaults *InsertOpts
}

// NewClient returns a client that uses pool. The configuration is checked
// here; an invalid one returns an *InvalidOptionError.
func NewClient[T any](pool *pgxpool.Pool, cfg ClientConfig) (*Client[T], error) {
	cfg, err := checkClientConfig(pool, cfg)
	if err != nil {
		return nil, err
	}
	kind, err := KindOf[T]("ClientConfig.Kind", cfg.Kind)
	if err != nil {
		return nil, err
	}
	cfg.Kind = kind
	def, err := defaultsOf(reflect.TypeFor[T]())
	if err != nil {
		return nil, err
	}
	if err := checkDefaults(cfg, reflect.TypeFor[T](), def); err != nil {
		return nil, err
	}
	return &Client[T]{copier: newCopier(pool, cfg), cfg: cfg, kind: kind, defaults: def}, nil
}

// Queue is the client's default queue.
func (c *Client[T]) Queue() string { return c.cfg.Queue }

// Kind is the kind of the jobs the client inserts.
func (c *Client[T]) Kind() string { return c.kind }

// insertion is a validated InsertOpts with the client's defaults applied.
type insertion struct {
	queue       string
	priority    int16
	maxAttempts int32
	runAt       *time.Time
	delay       time.Duration
	metadata    []byte
	unique      *uniqueness
	timeout     pgtype.Int8 // milliseconds; NULL: the kind's
}

// uniqueKey is the unique key of a job inserted as in asks with the
// encoded payload, or nil when in is not unique. The period counts from
// the job's scheduled time: RunAt, or this process's clock plus Delay.
func (in *insertion) uniqueKey(kind string, payload []byte, at time.Time) ([]byte, error) {
	if in.unique == nil {
		return nil, nil
	}
	return in.unique.keyOf(kind, in.queue, payload, at)
}

// scheduledAt is when a job inserted as in asks is due, by now's clock.
func (in *insertion) scheduledAt(now time.Time) time.Time {
	if in.runAt != nil {
		return *in.runAt
	}
	return now.Add(in.delay)
}

// uniqueStatuses is the job's unique_statuses column: NULL when in is not
// unique.
func (in *insertion) uniqueStatuses() pgtype.Int2 {
	if in.unique == nil {
		return pgtype.Int2{}
	}
	return pgtype.Int2{Int16: in.unique.statuses, Valid: true}
}

func (c *Client[T]) resolve(opts *InsertOpts) (insertion, error) {
	return resolveInsertOpts(c.cfg, withDefaults(c.defaults, opts))
}

// ValidateQueue checks a queue name: 1 to 128 characters. option names the
// setting it came from, for the *InvalidOptionError it returns otherwise.
func ValidateQueue(option, queue string) error {
	if n := utf8.RuneCountInString(queue); n == 0 || n > MaxQueueLength {
		return &InvalidOptionError{Option: option, Value: queue, Reason: "a queue name has 1 to 128 characters"}
	}
	if !utf8.ValidString(queue) || strings.ContainsRune(queue, 0) {
		return &InvalidOptionError{Option: option, Value: queue, Reason: "a queue name is valid UTF-8 without NUL characters"}
	}
	return nil
}

// validateMaxAttempts checks a max attempts value already known to be set.
func validateMaxAttempts(option string, n int) error {
	if n < 1 || n > math.MaxInt32 {
		return &InvalidOptionError{Option: option, Value: n, Reason: "must be between 1 and 2147483647 (0 means the default)"}
	}
	return nil
}

// encode turns a payload into the JSON that will be stored.
func (c *Client[T]) encode(payload T) ([]byte, error) {
	return encodePayload(payload, typeName[T](), c.cfg.MaxPayloadBytes)
}

// unstorableJSON says why valid JSON text cannot be stored as jsonb, or
// returns "": jsonb rejects the escape \u0000, unpaired UTF-16 surrogate
// escapes, and numbers beyond the range of PostgreSQL's numeric type. One
// pass, tracking whether it is inside a string.
func unstorableJSON(b []byte) string {
	if !utf8.Valid(b) {
		// encoding/json replaces invalid UTF-8 in strings it encodes, but
		// passes a json.RawMessage (and a MarshalJSON's output) as it is.
		return "it holds invalid UTF-8, which PostgreSQL's jsonb cannot store"
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '"':
				inString = false
			case '\\':
				if i+1 < len(b) && b[i+1] == 'u' && i+5 < len(b) {
					r := hex4(b[i+2 : i+6])
					switch {
					case r == 0:
						return `it holds a NUL character (\u0000), which PostgreSQL's jsonb cannot store; encode binary data as base64 ([]byte does this)`
					case r >= 0xD800 && r <= 0xDBFF:
						if i+11 >= len(b) || b[i+6] != '\\' || b[i+7] != 'u' || !isLowSurrogate(hex4(b[i+8:i+12])) {
							return "it holds an unpaired UTF-16 surrogate escape, which PostgreSQL's jsonb cannot store"
						}
						i += 6
					case isLowSurrogate(r):
						return "it holds an unpaired UTF-16 surrogate escape, which PostgreSQL's jsonb cannot store"
					}
					i += 5
				} else {
					i++ // the escaped character
				}
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c >= '0' && c <= '9' && (i == 0 || b[i-1] < '0' || b[i-1] > '9') && (i == 0 || b[i-1] != '.'):
			// The digits of a number before and after its point:
			// numeric holds up to 131072 and 16383.
			j := i
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			whole := j - i
			frac := 0
			if j < len(b) && b[j] == '.' {
				k := j + 1
				for k < len(b) && b[k] >= '0' && b[k] <= '9' {
					k++
				}
				frac, j = k-j-1, k
			}
			if whole > 131072 || frac > 16383 {
				return "it holds a number with more digits than PostgreSQL's numeric type holds (131072 before the point, 16383 after)"
			}
			i = j - 1
		case (c == 'e' || c == 'E') && i > 0 && b[i-1] >= '0' && b[i-1] <= '9':
			// An exponent: numeric holds up to 131072 digits before the
			// point and 16383 after.
			j := i + 1
			negative := j < len(b) && b[j] == '-'
			if j < len(b) && (b[j] == '+' || b[j] == '-') {
				j++
			}
			exp := 0
			for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
				if exp < 1_000_000 {
					exp = exp*10 + int(b[j]-'0')
				}
			}
			if !negative && exp > 131000 || negative && exp > 16000 {
				return "it holds a number whose exponent is beyond the range of PostgreSQL's numeric type"
			}
			i = j - 1
		}
	}
	return ""
}

func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return -1
		}
	}
	return r
}

func isLowSurrogate(r rune) bool { return r >= 0xDC00 && r <= 0xDFFF }

// Insert adds one job and returns it as stored. The queue's workers are
// woken by a notification the client sends after the insert committed,
// from a goroutine of its own, shared with the other inserts committed
// meanwhile, so that concurrent inserts do not wait for one another's
// commits, nor Insert for the notification. A program that exits right
// after an Insert calls Flush first, or its workers find the job at their
// next poll.
func (c *Client[T]) Insert(ctx context.Context, payload T, opts *InsertOpts) (*Job[T], error) {
	row, err := c.insert(ctx, c.queries, payload, opts)
	if err != nil {
		return nil, err
	}
	if row.JobInsertRow != nil && row.Runnable {
		c.waker.WakeSoon(row.target(), row.head())
	}
	return row.job, row.decodeErr
}

// InsertTx adds one job inside the caller's transaction: the job exists if
// and only if tx commits. Workers are woken once it committed, by a
// notification the client sends from a goroutine of its own, which follows
// the transaction by its id; nobody is woken if it rolls back. A program
// that exits right after its commit calls Flush first, or its workers find
// the job at their next poll.
func (c *Client[T]) InsertTx(ctx context.Context, tx pgx.Tx, payload T, opts *InsertOpts) (*Job[T], error) {
	row, err := c.insert(ctx, c.queries.WithTx(tx), payload, opts)
	if err != nil {
		return nil, err
	}
	if row.JobInsertRow != nil && row.Runnable {
		if err := c.wakeAfter(ctx, tx, row.XactID, row.target(), row.head()); err != nil {
			return nil, dberr.Wrap("tasuki: insert job", err)
		}
	}
	return row.job, row.decodeErr
}

// wakeAfter has the workers of t woken once the caller's transaction tx
// (xact) commits: see wakeAfterTx.
func (c *Client[T]) wakeAfter(ctx context.Context, tx pgx.Tx, xact int64, t waker.Target, h waker.Head) error {
	return wakeAfterTx(ctx, c.waker, c.pool, tx, xact, []wake{{target: t, head: h}})
}

// Flush waits until the workers were woken for every job this client
// inserted before the call (for InsertTx and InsertManyTx: once each
// caller's transaction ended; so never call it inside a transaction you
// inserted in), or until ctx ends. It returns the error of a wake-up that
// could not be sent: those jobs wait for the workers' next poll. Call it
// before a program that inserted jobs exits; a long-running service need
// not.
func (c *Client[T]) Flush(ctx context.Context) error {
	return c.waker.Flush(ctx)
}

// inserted is one insert's result.
type inserted[T any] struct {
	*db.JobInsertRow // nil when a unique insert found its job existing
	queue            string
	job              *Job[T]
	// decodeErr: the payload sent does not decode back into T (a
	// MarshalJSON without its UnmarshalJSON, say). The job is stored.
	decodeErr error
}

func (r *inserted[T]) target() waker.Target {
	return waker.Target{Schema: r.Schema, Queue: r.queue}
}

func (r *inserted[T]) head() waker.Head {
	return waker.Head{Kind: r.job.Kind, Priority: int16(r.job.Priority), ScheduledAt: r.ScheduledAt}
}

func (c *Client[T]) insert(ctx context.Context, q *db.Queries, payload T, opts *InsertOpts) (res *inserted[T], err error) {
	if len(c.mws) > 0 {
		b, err := c.encode(payload)
		if err != nil {
			return nil, err
		}
		p := paramsOf(c.cfg, c.kind, b, c.defaults, opts)
		err = runInsertMiddleware(ctx, c.mws, []*InsertParams{p}, func(ctx context.Context) error {
			in, err := resolveInsertOpts(c.cfg, &p.Opts)
			if err != nil {
				return err
			}
			if res, err = c.insertResolved(ctx, q, in, b); err != nil {
				return err
			}
			if res.job != nil {
				p.ID, p.Duplicate = res.job.ID, res.job.Duplicate
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return res, nil
	}
	in, err := c.resolve(opts)
	if err != nil {
		return nil, err
	}
	b, err := c.encode(payload)
	if err != nil {
		return nil, err
	}
	return c.insertResolved(ctx, q, in, b)
}

// insertResolved inserts the job of payload b as in asks.
func (c *Client[T]) insertResolved(ctx context.Context, q *db.Queries, in insertion, b []byte) (*inserted[T], error) {
	key, err := in.uniqueKey(c.kind, b, in.scheduledAt(time.Now()))
	if err != nil {
		return nil, err
	}
	var row *db.JobInsertRow
	// A unique insert that meets an existing job returns that job. The
	// job can leave its unique statuses (fail, be removed) between the
	// insert and the read: then the insert is tried again.
	for range 3 {
		row, err = q.JobInsert(ctx, db.JobInsertParams{
			Queue:          in.queue,
			Kind:           c.kind,
			Priority:       in.priority,
			Payload:        string(b),
			MaxAttempts:    in.maxAttempts,
			RunAt:          in.runAt,
			DelayUs:        in.delay.Microseconds(),
			Metadata:       string(in.metadata),
			UniqueKey:      key,
			UniqueStatuses: in.uniqueStatuses(),
			TimeoutMs:      in.timeout,
		})
		if err == nil || key == nil || !errors.Is(err, pgx.ErrNoRows) {
			break
		}
		existing, err := q.JobByUniqueKey(ctx, key)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, dberr.Wrap("tasuki: insert job: read the job it duplicates", err)
		}
		job, err := jobFromRow[T](existing)
		if job != nil {
			job.Duplicate = true
		}
		return &inserted[T]{queue: existing.Queue, job: job, decodeErr: err}, nil
	}
	if key != nil && errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("tasuki: insert unique job: the job holding its key changed status three times while it was read; try again")
	}
	if err != nil {
		return nil, dberr.Wrap("tasuki: insert job", err)
	}
	// The stored job is what was sent, not read back; its payload is
	// decoded from the JSON sent, so that it is what a worker will see
	// (encoding/json replaces invalid UTF-8, drops `json:"-"` fields, …).
	job := &Job[T]{
		ID: row.ID, Queue: in.queue, Kind: c.kind, Status: StatusPending, Priority: int(in.priority),
		MaxAttempts: int(in.maxAttempts), ScheduledAt: row.ScheduledAt, CreatedAt: row.CreatedAt,
		Metadata: json.RawMessage(in.metadata),
	}
	res := &inserted[T]{JobInsertRow: row, queue: in.queue, job: job}
	if err := json.Unmarshal(b, &job.Payload); err != nil {
		// The job is stored; a worker will fail it the same way.
		res.decodeErr = &PayloadDecodeError{JobID: row.ID, Type: typeName[T](), Err: err}
	}
	if c.events.Active() {
		c.events.Publish(Event{Type: EventInserted, JobID: row.ID, Kind: c.kind, Queue: in.queue})
	}
	return res, nil
}

// InsertMany adds many jobs with one COPY, in a transaction of its own, and
// returns how many were inserted. Workers are woken as by Insert, with one
// notification for the whole batch. opts apply to every job. Every payload
// is checked before the first row is sent: one invalid payload inserts
// nothing.
func (c *Client[T]) InsertMany(ctx context.Context, payloads []T, opts *InsertOpts) (int64, error) {
	if len(c.mws) > 0 {
		return c.insertManyThrough(ctx, nil, payloads, opts)
	}
	rows, ins, err := c.prepareMany(payloads, opts)
	if err != nil {
		return 0, err
	}
	return c.insertMany(ctx, rows, ins)
}

// InsertManyTx is InsertMany inside the caller's transaction: the jobs exist
// if and only if tx commits, and workers are woken only then, as by
// InsertTx.
func (c *Client[T]) InsertManyTx(ctx context.Context, tx pgx.Tx, payloads []T, opts *InsertOpts) (int64, error) {
	if len(c.mws) > 0 {
		return c.insertManyThrough(ctx, tx, payloads, opts)
	}
	rows, ins, err := c.prepareMany(payloads, opts)
	if err != nil {
		return 0, err
	}
	return c.insertManyTx(ctx, tx, rows, ins)
}

// insertManyThrough is InsertMany (tx nil) or InsertManyTx through the
// client's insert middleware.
func (c *Client[T]) insertManyThrough(ctx context.Context, tx pgx.Tx, payloads []T, opts *InsertOpts) (int64, error) {
	if len(payloads) == 0 {
		return 0, nil
	}
	params := make([]*InsertParams, len(payloads))
	for i, pl := range payloads {
		b, err := c.encode(pl)
		if err != nil {
			return 0, fmt.Errorf("tasuki: payload %d of %d: %w", i, len(payloads), err)
		}
		params[i] = paramsOf(c.cfg, c.kind, b, c.defaults, opts)
	}
	return c.insertParams(ctx, tx, c.cfg, params)
}

// prepareMany checks every payload and makes its row; every job is
// inserted as opts ask.
func (c *Client[T]) prepareMany(payloads []T, opts *InsertOpts) ([]db.JobInsertCopyParams, []insertion, error) {
	in, err := c.resolve(opts)
	if err != nil {
		return nil, nil, err
	}
	rows := make([]db.JobInsertCopyParams, len(payloads))
	ins := make([]insertion, len(payloads))
	for i, p := range payloads {
		b, err := c.encode(p)
		if err != nil {
			return nil, nil, fmt.Errorf("tasuki: payload %d of %d: %w", i, len(payloads), err)
		}
		rows[i] = rowOf(c.kind, b, in)
		ins[i] = in
	}
	return rows, ins, nil
}

// Get returns the job with the given id, or an error wrapping
// ErrJobNotFound. A stored payload that does not decode into T gives a
// *PayloadDecodeError.
func (c *Client[T]) Get(ctx context.Context, id int64) (*Job[T], error) {
	row, err := c.queries.JobGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &jobNotFoundError{id: id}
	}
	if err != nil {
		return nil, dberr.Wrap(fmt.Sprintf("tasuki: get job %d", id), err)
	}
	return jobFromRow[T](row)
}

// JobFinishedError says that a job cannot be changed because it already
// reached a final status. Nothing was changed.
type JobFinishedError struct {
	// JobID is the job.
	JobID int64
	// Status is its final status.
	Status Status
}

func (e *JobFinishedError) Error() string {
	return fmt.Sprintf("tasuki: job %d is already %s; only pending or running jobs can be canceled", e.JobID, e.Status)
}

// Cancel cancels a pending or running job and returns it as stored. A
// running job's handler sees its context canceled promptly (through a
// NOTIFY; at worst at the worker's next heartbeat), and its late result
// cannot overwrite the cancellation. A finished job is left unchanged and
// gives a *JobFinishedError; an unknown id an error wrapping ErrJobNotFound.
func (c *Client[T]) Cancel(ctx context.Context, id int64) (*Job[T], error) {
	row, err := cancelJob(ctx, c.queries, id, adminReason)
	if err != nil {
		return nil, err
	}
	return jobFromRow[T](row)
}

// cancelJob cancels a pending or running job through the same statement as
// Admin.CancelMany, which also tells its worker, and returns the job as
// stored afterwards. A job that is not there gives ErrJobNotFound; a
// finished one a *JobFinishedError, and stays as it was.
func cancelJob(ctx context.Context, queries *db.Queries, id int64, reason string) (*db.TasukiJob, error) {
	wrap := func(err error) error { return dberr.Wrap(fmt.Sprintf("tasuki: cancel job %d", id), err) }
	r, err := queries.JobCancelMany(ctx, db.JobCancelManyParams{
		Statuses: []string{string(StatusPending), string(StatusRunning)},
		Ids:      []int64{id},
		Reason:   reason,
	})
	if err != nil {
		return nil, wrap(err)
	}
	row, err := queries.JobGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &jobNotFoundError{id: id}
	}
	if err != nil {
		return nil, wrap(err)
	}
	if r.Canceled == 0 {
		return nil, &JobFinishedError{JobID: id, Status: Status(row.Status)}
	}
	return row, nil
}
