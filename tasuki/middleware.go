package tasuki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
)

// InsertParams is one job about to be inserted, as insert middleware sees
// it.
type InsertParams struct {
	// Kind is the job's kind. Read only.
	Kind string
	// Payload is the job's payload as it will be stored. Read only:
	// middleware that changes it changes nothing.
	Payload json.RawMessage
	// Opts are the job's insert options, with the payload type's defaults
	// (DefaultOpts) and the client's (ClientConfig: Queue, MaxAttempts)
	// filled in. Middleware may change any of them, Metadata included (it
	// is the job's own copy, nested maps and slices of types
	// map[string]any, []any, map[string]string and []string included;
	// other values in it are shared with the caller): the job is
	// inserted, and checked, as they say once every middleware called
	// next.
	Opts InsertOpts
	// ID is the inserted job's id, set when next returns for Insert and
	// InsertTx; 0 for jobs inserted by COPY, which reports no ids.
	ID int64
	// Duplicate is set when next returns if the insert was unique and met
	// an existing job (see Job.Duplicate): nothing was inserted.
	Duplicate bool
}

// InsertMiddleware wraps the insertion of jobs: every insert of a client
// or inserter configured with it (ClientConfig.InsertMiddleware) calls it,
// once per call with all of the call's jobs (one for Insert, all of a
// batch for InsertMany), before any job is written. It may change each
// job's options and metadata, then must call next to insert them, with
// the context the insert statements should use, and return what next
// returns (or an error of its own). Not calling next inserts nothing: the
// error it returns is the insert's, and nil becomes ErrNotInserted. Middleware runs in the order given,
// the first outermost. A panic in it is recovered and returned as an
// *InsertPanicError.
type InsertMiddleware func(ctx context.Context, jobs []*InsertParams, next func(ctx context.Context) error) error

// InsertMiddlewareFor returns mw limited to jobs of the given kinds: it
// sees only those of a call's jobs, and is skipped for a call with none.
func InsertMiddlewareFor(mw InsertMiddleware, kinds ...string) InsertMiddleware {
	return func(ctx context.Context, jobs []*InsertParams, next func(ctx context.Context) error) error {
		var mine []*InsertParams
		for _, j := range jobs {
			if slices.Contains(kinds, j.Kind) {
				mine = append(mine, j)
			}
		}
		if len(mine) == 0 {
			return next(ctx)
		}
		return mw(ctx, mine, next)
	}
}

// InsertPanicError is an insert middleware's recovered panic. Inserted
// says whether the jobs were inserted before it (the middleware panicked
// after next returned): outside a transaction of the caller's they stay
// inserted; inside one, rolling it back undoes them.
type InsertPanicError struct {
	// Value is what the middleware panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
	// Inserted: next had returned without error before the panic.
	Inserted bool
}

func (e *InsertPanicError) Error() string {
	if e.Inserted {
		return fmt.Sprintf("tasuki: insert middleware panicked after the jobs were inserted: %v", e.Value)
	}
	return fmt.Sprintf("tasuki: insert middleware panicked; nothing was inserted: %v", e.Value)
}

// ErrNotInserted is returned by an insert whose middleware returned nil
// without the jobs being inserted: it did not call next, or dropped the
// error next returned (which the returned error then wraps too). Nothing
// was inserted.
var ErrNotInserted = errors.New("tasuki: insert middleware returned nil, but the jobs were not inserted (it did not call next, or dropped next's error)")

// runInsertMiddleware calls insert through mws, each seeing jobs.
func runInsertMiddleware(ctx context.Context, mws []InsertMiddleware, jobs []*InsertParams, insert func(ctx context.Context) error) (err error) {
	inserted := false
	var dropped error // the last error of insert
	defer func() {
		if v := recover(); v != nil {
			err = &InsertPanicError{Value: v, Stack: string(debug.Stack()), Inserted: inserted}
		}
	}()
	var call func(i int, ctx context.Context) error
	call = func(i int, ctx context.Context) error {
		if i == len(mws) {
			if inserted {
				return errors.New("tasuki: insert middleware called next again after the jobs were inserted; they are inserted once")
			}
			if err := insert(ctx); err != nil {
				dropped = err
				return err
			}
			inserted = true
			return nil
		}
		return mws[i](ctx, jobs, func(ctx context.Context) error { return call(i+1, ctx) })
	}
	err = call(0, ctx)
	if err == nil && !inserted {
		if dropped != nil {
			return fmt.Errorf("%w: %w", ErrNotInserted, dropped)
		}
		return ErrNotInserted
	}
	return err
}

// checkInsertMiddleware rejects a nil middleware in cfg.
func checkInsertMiddleware(option string, mws []InsertMiddleware) error {
	for i, m := range mws {
		if m == nil {
			return &InvalidOptionError{Option: fmt.Sprintf("%s[%d]", option, i), Value: nil, Reason: "an insert middleware is nil"}
		}
	}
	return nil
}

// deepCopy copies the maps and slices of decoded-JSON shape in v
// (map[string]any, []any), so that middleware changing nested metadata
// changes the job's own; other values are shared.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	case map[string]string:
		return maps.Clone(v)
	case []string:
		return slices.Clone(v)
	}
	return v
}

// paramsOf returns what middleware sees of a job of kind with payload b,
// inserted with opts over the type's defaults def and cfg's defaults.
func paramsOf(cfg ClientConfig, kind string, b []byte, def, opts *InsertOpts) *InsertParams {
	p := &InsertParams{Kind: kind, Payload: b}
	if o := withDefaults(def, opts); o != nil {
		p.Opts = *o
	}
	if p.Opts.Queue == "" {
		p.Opts.Queue = cfg.Queue
	}
	if p.Opts.MaxAttempts == 0 {
		p.Opts.MaxAttempts = cfg.MaxAttempts
	}
	if p.Opts.Metadata != nil {
		p.Opts.Metadata = deepCopy(p.Opts.Metadata).(map[string]any)
	} else {
		p.Opts.Metadata = make(map[string]any) // for middleware to add to
	}
	if p.Opts.Unique != nil {
		u := *p.Opts.Unique
		u.Statuses = slices.Clone(u.Statuses)
		p.Opts.Unique = &u
	}
	return p
}
