package tasuki

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
)

// InsertManyParams is one job of Inserter.InsertMany: its payload, its
// kind and how to insert it.
type InsertManyParams struct {
	// Payload is the job's payload, stored as JSON as Client[T] stores a
	// T. Its type's Kind method (see Kinder) gives the job's kind, unless
	// Kind is set.
	Payload any
	// Kind is the job's kind. Defaults to what the Kind method of
	// Payload's type returns, called on the type's zero value as for
	// Client[T] (for a pointer type, on a pointer to a zero value). One
	// of the two is required; 1 to 128 characters.
	Kind string
	// InsertOpts adjust the job's insertion as for Client.Insert: queue,
	// priority, schedule, attempts, metadata, uniqueness and timeout, over
	// the payload type's DefaultOpts. nil uses those defaults and the
	// inserter's (its ClientConfig).
	InsertOpts *InsertOpts
}

// Inserter inserts jobs of any kinds and payload types together: a batch
// of several kinds, into several queues, in one COPY and one transaction,
// which can be the caller's. Client[T] inserts the jobs of one payload
// type; an Inserter is for code that produces jobs of many, such as an
// outbox relay or a fan-out. It is safe for concurrent use.
type Inserter struct {
	copier
	cfg ClientConfig
}

// NewInserter returns an inserter that uses pool. cfg gives the defaults
// of the jobs' InsertOpts, as for NewClient: Queue, MaxAttempts and
// MaxPayloadBytes, with the same defaults. cfg.Kind must be empty: each
// job's kind comes from its InsertManyParams. The configuration is
// checked here; an invalid one returns an *InvalidOptionError. It does
// not touch the database.
func NewInserter(pool *pgxpool.Pool, cfg ClientConfig) (*Inserter, error) {
	if cfg.Kind != "" {
		return nil, &InvalidOptionError{Option: "ClientConfig.Kind", Value: cfg.Kind,
			Reason: "an Inserter takes each job's kind from its InsertManyParams (Kind, or its payload's Kind method): leave ClientConfig.Kind empty"}
	}
	cfg, err := checkClientConfig(pool, cfg)
	if err != nil {
		return nil, err
	}
	return &Inserter{copier: newCopier(pool, cfg), cfg: cfg}, nil
}

// InsertMany adds the jobs params describe, of any kinds and queues, with
// one COPY, in a transaction of its own, and returns how many were
// inserted. Every job is checked before the first row is sent: one
// invalid job inserts nothing. A job without a kind, or with invalid
// InsertOpts, gives an *InvalidOptionError whose Option names its index
// (InsertManyParams[3].InsertOpts.Priority); a payload that cannot be
// stored an *InvalidPayloadError, wrapped in an error that names its
// index. Workers of every queue that got jobs runnable at once are woken
// as by Client.InsertMany, for the kinds and priorities of those jobs.
func (i *Inserter) InsertMany(ctx context.Context, params []InsertManyParams) (int64, error) {
	if len(i.mws) > 0 {
		return i.insertThrough(ctx, nil, params)
	}
	rows, ins, err := i.prepare(params)
	if err != nil {
		return 0, err
	}
	return i.insertMany(ctx, rows, ins)
}

// InsertManyTx is InsertMany inside the caller's transaction: the jobs
// exist if and only if tx commits, and workers are woken only then, as by
// Client.InsertTx.
func (i *Inserter) InsertManyTx(ctx context.Context, tx pgx.Tx, params []InsertManyParams) (int64, error) {
	if len(i.mws) > 0 {
		return i.insertThrough(ctx, tx, params)
	}
	rows, ins, err := i.prepare(params)
	if err != nil {
		return 0, err
	}
	return i.insertManyTx(ctx, tx, rows, ins)
}

// Flush waits until the workers were woken for every job this inserter
// inserted before the call (for InsertManyTx: once each caller's
// transaction ended; so never call it inside a transaction you inserted
// in), or until ctx ends, as Client.Flush does. Call it before a program
// that inserted jobs exits.
func (i *Inserter) Flush(ctx context.Context) error {
	return i.waker.Flush(ctx)
}

// prepare checks every job and makes its row, with the insertion it asks
// for; the first invalid job stops it.
func (i *Inserter) prepare(params []InsertManyParams) ([]db.JobInsertCopyParams, []insertion, error) {
	rows := make([]db.JobInsertCopyParams, len(params))
	ins := make([]insertion, len(params))
	kinds := make(map[reflect.Type]kindOfType, 4) // most batches hold few types
	for n, p := range params {
		kind, def, err := i.kindOf(kinds, params, n)
		if err != nil {
			return nil, nil, err
		}
		in, err := resolveInsertOpts(i.cfg, withDefaults(def, p.InsertOpts))
		if err != nil {
			return nil, nil, atIndex(n, err)
		}
		b, err := i.encode(params, n)
		if err != nil {
			return nil, nil, err
		}
		rows[n] = rowOf(kind, b, in)
		ins[n] = in
	}
	return rows, ins, nil
}

// insertThrough is InsertMany (tx nil) or InsertManyTx through the
// inserter's insert middleware.
func (i *Inserter) insertThrough(ctx context.Context, tx pgx.Tx, params []InsertManyParams) (int64, error) {
	if len(params) == 0 {
		return 0, nil
	}
	jobs := make([]*InsertParams, len(params))
	kinds := make(map[reflect.Type]kindOfType, 4)
	for n, p := range params {
		kind, def, err := i.kindOf(kinds, params, n)
		if err != nil {
			return 0, err
		}
		b, err := i.encode(params, n)
		if err != nil {
			return 0, err
		}
		jobs[n] = paramsOf(i.cfg, kind, b, def, p.InsertOpts)
	}
	return i.insertParams(ctx, tx, i.cfg, jobs)
}

// kindOf returns the kind of job n and its type's default options, with
// kinds caching what each payload type gives.
func (i *Inserter) kindOf(kinds map[reflect.Type]kindOfType, params []InsertManyParams, n int) (string, *InsertOpts, error) {
	p := params[n]
	typ := reflect.TypeOf(p.Payload)
	k, ok := kinds[typ]
	if !ok {
		k = kindOf(typ)
		kinds[typ] = k
	}
	kind := p.Kind
	if kind != "" {
		if err := ValidateKind(fmt.Sprintf("InsertManyParams[%d].Kind", n), kind); err != nil {
			return "", nil, err
		}
	} else {
		if err := k.check(n); err != nil {
			return "", nil, err
		}
		kind = k.kind
	}
	if k.defaultsErr != nil {
		return "", nil, fmt.Errorf("tasuki: payload %d of %d (InsertManyParams[%d].Payload): %w", n, len(params), n, k.defaultsErr)
	}
	if k.defaults != nil {
		if err := checkDefaults(i.cfg, typ, k.defaults); err != nil {
			return "", nil, fmt.Errorf("tasuki: payload %d of %d (InsertManyParams[%d].Payload): %w", n, len(params), n, err)
		}
	}
	return kind, k.defaults, nil
}

// encode encodes the payload of job n.
func (i *Inserter) encode(params []InsertManyParams, n int) ([]byte, error) {
	b, err := encodePayload(params[n].Payload, fmt.Sprint(reflect.TypeOf(params[n].Payload)), i.cfg.MaxPayloadBytes)
	if err != nil {
		return nil, fmt.Errorf("tasuki: payload %d of %d (InsertManyParams[%d].Payload): %w", n, len(params), n, err)
	}
	return b, nil
}

// atIndex names job n in an *InvalidOptionError about its InsertOpts.
func atIndex(n int, err error) error {
	var opt *InvalidOptionError
	if !errors.As(err, &opt) {
		return err
	}
	named := *opt
	named.Option = fmt.Sprintf("InsertManyParams[%d].%s", n, opt.Option)
	return &named
}

// kindOfType is the kind a payload type's Kind method gives, found once
// per type and batch.
type kindOfType struct {
	typ    reflect.Type
	kind   string
	method bool // the type has a Kind method that returned
	// defaults are the type's default insert options (DefaultOpts), and
	// defaultsErr why its InsertOpts method gave none.
	defaults    *InsertOpts
	defaultsErr error
}

// kindOf calls typ's Kind method as KindOf does for a type parameter: on
// typ's zero value, or on a pointer to one when the method is declared on
// the pointer type. For a pointer type, whose zero value is nil, it calls
// it on a pointer to a zero value instead, so that a payload given as
// &SendEmail{...} has SendEmail's kind.
func kindOf(typ reflect.Type) (k kindOfType) {
	k.typ = typ
	if typ == nil { // a nil Payload
		return k
	}
	// A Kind method that panics on the zero value gives no kind.
	defer func() {
		if recover() != nil {
			k.kind, k.method = "", false
		}
	}()
	k.defaults, k.defaultsErr = defaultsOf(typ)
	v, ok := zeroReceiver(typ, reflect.TypeFor[Kinder]())
	if !ok {
		return k
	}
	k.kind, k.method = v.Interface().(Kinder).Kind(), true
	return k
}

// check says why job n cannot have this kind, or returns nil.
func (k kindOfType) check(n int) error {
	switch {
	case k.typ == nil:
		return &InvalidOptionError{Option: fmt.Sprintf("InsertManyParams[%d].Kind", n), Value: "",
			Reason: "the payload is nil, so it names no kind: set Kind"}
	case !k.method:
		return &InvalidOptionError{Option: fmt.Sprintf("InsertManyParams[%d].Kind", n), Value: "",
			Reason: "the payload type " + k.typ.String() + " has no Kind() string method: add one that returns a stable name for its jobs, or set Kind"}
	}
	return ValidateKind(fmt.Sprintf("InsertManyParams[%d].Payload: %s.Kind()", n, k.typ), k.kind)
}
