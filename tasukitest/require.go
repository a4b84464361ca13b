package tasukitest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tasukiq/tasuki/tasuki"
)

// RequireInserted requires that exactly one job of T's kind (or
// want.Kind) in the scope of ctx matches want, and returns it with its
// payload decoded into T. The scope is the test scope of ctx (see
// WithScope and ScopeMiddleware); without one, every job in the database
// that db reads. Otherwise it reports what it found and stops the test:
// how many jobs of the kind, their ids, and how the nearest one differs
// from want, or, with none of the kind, the jobs of other kinds.
func RequireInserted[T any](ctx context.Context, t TB, db DB, want *Want) *tasuki.Job[T] {
	t.Helper()
	return requireInserted[T](ctx, t, "RequireInserted", db, scopeFor(ctx, false), want)
}

// RequireInsertedTx is RequireInserted for the jobs tx inserted itself, in
// any of its savepoints (those it only changed are not seen): jobs of
// other transactions, committed or not, are not seen, whatever the scope
// of ctx.
func RequireInsertedTx[T any](ctx context.Context, t TB, tx pgx.Tx, want *Want) *tasuki.Job[T] {
	t.Helper()
	return requireInserted[T](ctx, t, "RequireInsertedTx", txDB(tx), scopeFor(ctx, true), want)
}

// RequireNotInserted requires that no job of T's kind (or want.Kind) in the
// scope of ctx matches want; a nil want, that there is no job of the kind.
// The scope is that of RequireInserted. Otherwise it lists the jobs that
// match and stops the test.
func RequireNotInserted[T any](ctx context.Context, t TB, db DB, want *Want) {
	t.Helper()
	requireNotInserted[T](ctx, t, "RequireNotInserted", db, scopeFor(ctx, false), want)
}

// RequireNotInsertedTx is RequireNotInserted for the jobs tx inserted itself,
// as RequireInsertedTx sees them.
func RequireNotInsertedTx[T any](ctx context.Context, t TB, tx pgx.Tx, want *Want) {
	t.Helper()
	requireNotInserted[T](ctx, t, "RequireNotInsertedTx", txDB(tx), scopeFor(ctx, true), want)
}

// RequireManyInserted requires that the jobs in the scope of ctx whose
// kinds the wants name are, in insertion (id) order, one for each want,
// the first matching wants[0], and so on; jobs of other kinds are not
// looked at. Each want names its kind with Kind or through the Kind method
// of its Payload's type. The scope is that of RequireInserted. It returns
// the jobs, payloads undecoded (see tasuki.Decode); otherwise it lists,
// position by position, what it wanted and what it found, and stops the
// test.
func RequireManyInserted(ctx context.Context, t TB, db DB, wants []Want) []*tasuki.Job[json.RawMessage] {
	t.Helper()
	return requireMany(ctx, t, "RequireManyInserted", db, scopeFor(ctx, false), wants)
}

// RequireManyInsertedTx is RequireManyInserted for the jobs tx inserted
// itself, as RequireInsertedTx sees them.
func RequireManyInsertedTx(ctx context.Context, t TB, tx pgx.Tx, wants []Want) []*tasuki.Job[json.RawMessage] {
	t.Helper()
	return requireMany(ctx, t, "RequireManyInsertedTx", txDB(tx), scopeFor(ctx, true), wants)
}

// isNil reports whether v is nil, or a nil pointer, map or slice (a
// *pgxpool.Pool not yet made, a nil *T payload).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return r.IsNil()
	}
	return false
}

// txDB is tx as a DB, nil for a nil tx.
func txDB(tx pgx.Tx) DB {
	if tx == nil {
		return nil
	}
	return tx
}

// prepare checks the arguments common to the assertions on one kind.
func prepare[T any](t TB, fn string, db DB, want *Want) (*check, bool) {
	t.Helper()
	if isNil(db) {
		fail(t, "tasukitest: %s: the database is nil: pass the pool, connection or transaction the code under test inserts with", fn)
		return nil, false
	}
	given := ""
	if want != nil {
		given = want.Kind
	}
	kind, err := tasuki.KindOf[T]("Want.Kind", given)
	if err != nil {
		fail(t, "tasukitest: %s: %v", fn, err)
		return nil, false
	}
	if own, err := tasuki.KindOf[T]("", ""); given != "" && err == nil && own != given {
		// Another kind's jobs would be decoded into T.
		fail(t, "tasukitest: %s: Want.Kind %q contradicts the kind of the payload type, %q: leave Want.Kind empty, or use the payload type of kind %q",
			fn, given, own, given)
		return nil, false
	}
	c, err := newCheck("Want", kind, want)
	if err != nil {
		fail(t, "tasukitest: %s: %v", fn, err)
		return nil, false
	}
	return c, true
}

func requireInserted[T any](ctx context.Context, t TB, fn string, db DB, s scope, want *Want) *tasuki.Job[T] {
	t.Helper()
	c, ok := prepare[T](t, fn, db, want)
	if !ok {
		return nil
	}
	jobs, err := list(ctx, db, s, []string{c.kind}, []*check{c}, 0)
	if err != nil {
		fail(t, "tasukitest: %s: %v", fn, err)
		return nil
	}
	var matching []found
	for _, f := range jobs {
		if f.matches(c, 0) {
			matching = append(matching, f)
		}
	}
	head := fmt.Sprintf("tasukitest: %s: want exactly one job of %s, %s", fn, c, s.where())
	switch {
	case len(matching) == 1:
		job, err := tasuki.Decode[T](matching[0].job)
		if err != nil {
			fail(t, "%s; it is job %d, but: %v", head, matching[0].job.ID, err)
			return nil
		}
		return job
	case len(matching) > 1:
		lines := make([]string, len(matching))
		for i, f := range matching {
			lines[i] = "\t" + describe(f.job)
		}
		fail(t, "%s; found %d matching, of %d of the kind:\n%s\nNarrow the want (Payload, Queue, …), or assert them all with RequireManyInserted.",
			head, len(matching), len(jobs), strings.Join(lines, "\n"))
		return nil
	case len(jobs) == 0:
		fail(t, "%s; found no job of kind %q. %s", head, c.kind, others(ctx, db, s))
		return nil
	default:
		near := nearest(jobs, 0)
		fail(t, "%s; found none matching, of %d of the kind: %s.\nThe nearest, %s, differs in:\n\t%s",
			head, len(jobs), ids(jobs), describe(near.job), strings.Join(c.differences(near.job, near.diffs[0]), "\n\t"))
		return nil
	}
}

func requireNotInserted[T any](ctx context.Context, t TB, fn string, db DB, s scope, want *Want) {
	t.Helper()
	c, ok := prepare[T](t, fn, db, want)
	if !ok {
		return
	}
	jobs, err := list(ctx, db, s, []string{c.kind}, []*check{c}, 0)
	if err != nil {
		fail(t, "tasukitest: %s: %v", fn, err)
		return
	}
	var lines []string
	for _, f := range jobs {
		if f.matches(c, 0) {
			lines = append(lines, "\t"+describe(f.job))
		}
	}
	if len(lines) > 0 {
		fail(t, "tasukitest: %s: want no job of %s, %s; found %d:\n%s", fn, c, s.where(), len(lines), strings.Join(lines, "\n"))
	}
}

func requireMany(ctx context.Context, t TB, fn string, db DB, s scope, wants []Want) []*tasuki.Job[json.RawMessage] {
	t.Helper()
	if isNil(db) {
		fail(t, "tasukitest: %s: the database is nil: pass the pool, connection or transaction the code under test inserts with", fn)
		return nil
	}
	if len(wants) == 0 {
		fail(t, "tasukitest: %s: no wants: name the jobs you expect; to require that there are none, use RequireNotInserted", fn)
		return nil
	}
	checks := make([]*check, len(wants))
	var kinds []string
	seen := make(map[string]bool)
	for i := range wants {
		name := fmt.Sprintf("wants[%d]", i)
		kind := wants[i].Kind
		if kind == "" {
			var ok bool
			if kind, ok = payloadKind(wants[i].Payload); !ok {
				fail(t, "tasukitest: %s: %s names no kind: its Payload (%T) has no Kind() string method; set %s.Kind", fn, name, wants[i].Payload, name)
				return nil
			}
		}
		if err := tasuki.ValidateKind(name+".Kind", kind); err != nil {
			fail(t, "tasukitest: %s: %v", fn, err)
			return nil
		}
		c, err := newCheck(name, kind, &wants[i])
		if err != nil {
			fail(t, "tasukitest: %s: %v", fn, err)
			return nil
		}
		checks[i] = c
		if !seen[kind] {
			seen[kind] = true
			kinds = append(kinds, kind)
		}
	}
	jobs, err := list(ctx, db, s, kinds, checks, 0)
	if err != nil {
		fail(t, "tasukitest: %s: %v", fn, err)
		return nil
	}
	ok := len(jobs) == len(checks)
	for i := 0; ok && i < len(jobs); i++ {
		ok = jobs[i].matches(checks[i], i)
	}
	if ok {
		out := make([]*tasuki.Job[json.RawMessage], len(jobs))
		for i := range jobs {
			out[i] = jobs[i].job
		}
		return out
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tasukitest: %s: want %s of kinds %q, %s, in this order; found %d of those kinds:", fn, plural(len(checks), "job"), kinds, s.where(), len(jobs))
	for i := 0; i < max(len(jobs), len(checks)); i++ {
		switch {
		case i >= len(jobs):
			fmt.Fprintf(&b, "\n\t%d: missing: want %s", i+1, checks[i])
		case i >= len(checks):
			fmt.Fprintf(&b, "\n\t%d: unwanted: %s", i+1, describe(jobs[i].job))
		case jobs[i].matches(checks[i], i):
			fmt.Fprintf(&b, "\n\t%d: job %d matches", i+1, jobs[i].job.ID)
		default:
			fmt.Fprintf(&b, "\n\t%d: %s\n\t   does not match the want of %s:\n\t\t%s", i+1, describe(jobs[i].job), checks[i],
				strings.Join(checks[i].differences(jobs[i].job, jobs[i].diffs[i]), "\n\t\t"))
		}
	}
	fail(t, "%s", b.String())
	return nil
}

// plural is n things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
