package tasukitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/dberr"
	"github.com/tasukiq/tasuki/internal/jobrow"
	"github.com/tasukiq/tasuki/tasuki"
)

// scope is which jobs an assertion sees: those its transaction wrote
// (ownTx), those of a test scope (id), or every one.
type scope struct {
	ownTx bool
	id    string
}

// scopeFor is the scope of an assertion made through ctx; ownTx for the Tx
// functions, which ignore a test scope in ctx.
func scopeFor(ctx context.Context, ownTx bool) scope {
	if ownTx {
		return scope{ownTx: true}
	}
	return scope{id: scopeOf(ctx)}
}

// where says, in a message, which jobs the scope holds.
func (s scope) where() string {
	switch {
	case s.ownTx:
		return "inserted by this transaction"
	case s.id != "":
		return fmt.Sprintf("in test scope %q", s.id)
	default:
		return "in the whole database (ctx carries no tasukitest.WithScope scope)"
	}
}

// found is a job of the scope, with the conditions of each check that it
// fails.
type found struct {
	job   *tasuki.Job[json.RawMessage]
	diffs [][]string
}

// matches reports whether f is a job of c's kind with none of its
// conditions failing; i is c's index in the checks f was listed with.
func (f *found) matches(c *check, i int) bool {
	return f.job.Kind == c.kind && len(f.diffs[i]) == 0
}

// dbtx gives a DB the CopyFrom method of db.DBTX, which JobTestList does
// not use.
type dbtx struct{ DB }

func (dbtx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errors.New("tasukitest: CopyFrom is not used")
}

// list returns the jobs of s of the kinds given (every kind when none),
// at most maxRows of them (0: all), in id order, each compared with the
// checks.
func list(ctx context.Context, conn DB, s scope, kinds []string, checks []*check, maxRows int) ([]found, error) {
	conds := make([]json.RawMessage, len(checks))
	for i, c := range checks {
		conds[i] = c.cond
	}
	wants, err := json.Marshal(conds)
	if err != nil {
		return nil, err
	}
	if kinds == nil {
		kinds = []string{} // NULL would match no kind
	}
	params := db.JobTestListParams{Wants: string(wants), Kinds: kinds, OwnTx: s.ownTx,
		Scope: pgtype.Text{String: s.id, Valid: s.id != ""}}
	if maxRows > 0 {
		params.MaxRows = pgtype.Int4{Int32: int32(maxRows), Valid: true}
	}
	rows, err := db.New(dbtx{conn}).JobTestList(ctx, params)
	if err != nil {
		return nil, dberr.Wrap("read the jobs", err)
	}
	out := make([]found, len(rows))
	for i, r := range rows {
		job, err := jobrow.Raw(&r.TasukiJob)
		if err != nil {
			return nil, err
		}
		out[i].job = job
		if err := json.Unmarshal([]byte(r.Differences), &out[i].diffs); err != nil {
			return nil, fmt.Errorf("read the differences of job %d: %w", job.ID, err)
		}
		if len(out[i].diffs) != len(checks) {
			return nil, fmt.Errorf("job %d: %d wants compared, not %d", job.ID, len(out[i].diffs), len(checks))
		}
	}
	return out, nil
}

// describe is one job, for a message.
func describe(j *tasuki.Job[json.RawMessage]) string {
	return fmt.Sprintf("job %d (kind %q, queue %q, status %s, priority %d, max attempts %d, scheduled at %s, payload %s, metadata %s)",
		j.ID, j.Kind, j.Queue, j.Status, j.Priority, j.MaxAttempts, formatTime(j.ScheduledAt), clip(string(j.Payload)), clip(string(j.Metadata)))
}

// ids lists the ids and kinds of jobs, for a message.
func ids(jobs []found) string {
	parts := make([]string, len(jobs))
	for i, f := range jobs {
		parts[i] = fmt.Sprintf("%d (%s)", f.job.ID, f.job.Kind)
	}
	return strings.Join(parts, ", ")
}

// maxOthers is how many jobs of other kinds a message lists.
const maxOthers = 20

// others says which jobs the scope holds, when none of the kind wanted
// was found: often a job was inserted with another type.
func others(ctx context.Context, conn DB, s scope) string {
	all, err := list(ctx, conn, s, nil, nil, maxOthers+1)
	if err != nil {
		return fmt.Sprintf("(Listing the jobs of other kinds failed: %v.)", err)
	}
	if len(all) == 0 {
		return fmt.Sprintf("There is no job at all %s.", s.where())
	}
	count := fmt.Sprint(len(all))
	if len(all) > maxOthers {
		all, count = all[:maxOthers], fmt.Sprintf("more than %d; the first %d", maxOthers, maxOthers)
	}
	return fmt.Sprintf("Jobs of other kinds %s: %s: %s.", s.where(), count, ids(all))
}

// nearest is the job of jobs that fails the fewest conditions of check i,
// the first of those.
func nearest(jobs []found, i int) *found {
	var best *found
	for n := range jobs {
		if best == nil || len(jobs[n].diffs[i]) < len(best.diffs[i]) {
			best = &jobs[n]
		}
	}
	return best
}

// fail reports a failed assertion and stops the test; with a TB whose
// FailNow returns, the caller returns next.
func fail(t TB, format string, args ...any) {
	t.Helper()
	t.Errorf(format, args...)
	t.FailNow()
}
