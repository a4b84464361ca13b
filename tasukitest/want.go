package tasukitest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasukiq/tasuki/tasuki"
)

// TB is the part of testing.TB the helpers use: *testing.T and *testing.B
// satisfy it, and so does a fake that records failures.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	FailNow()
}

// DB is what the helpers read jobs through: a *pgxpool.Pool, a *pgx.Conn
// or a pgx.Tx.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Want is what a job must have to match. Each field left at its zero value
// (or nil) matches anything; a nil *Want matches any job of the kind.
type Want struct {
	// Kind is the job's kind. Defaults to the kind of the payload type: T
	// for the generic functions, else Payload's type (its Kind method,
	// see tasuki.Kinder). Set it for a payload type without a Kind method,
	// as ClientConfig.Kind is.
	Kind string
	// Payload holds the fields the job's payload must have: a struct value,
	// a map, or a json.RawMessage (taken as the JSON it holds). It is
	// encoded as JSON and compared by containment (jsonb @>): the payload
	// may have more fields, and an array in Payload matches an array
	// holding its elements, in any order. A struct field without
	// omitempty is always encoded, and so compared, zero or not: give
	// partial payloads as maps, or tag the fields omitempty. Defaults to
	// nil: any payload.
	Payload any
	// Metadata holds the keys the job's metadata must have, compared by
	// containment as Payload is. Defaults to nil: any metadata.
	Metadata map[string]any
	// Queue is the job's queue. Defaults to "": any queue.
	Queue string
	// Priority is the job's priority. Defaults to nil: any priority.
	Priority *int
	// MaxAttempts is the job's maximum number of attempts. Defaults to 0:
	// any.
	MaxAttempts int
	// Status is the job's status. Defaults to "": any status.
	Status tasuki.Status
	// ScheduledAt is when the job is scheduled, exactly, to the
	// microsecond (PostgreSQL's precision; finer digits are dropped, as
	// they are when a job is inserted): for a job inserted with
	// InsertOpts.RunAt. Defaults to the zero time: any time.
	ScheduledAt time.Time
	// ScheduledAfter and ScheduledBefore bound when the job is scheduled,
	// both inclusive: for a job inserted with a Delay, which counts from
	// the database clock, take the bounds from times read before and after
	// the insert, plus the delay. Each defaults to the zero time: no
	// bound.
	ScheduledAfter, ScheduledBefore time.Time
}

// check is a Want made ready for JobTestList: the object of its wants
// array, and what a failure message says of it.
type check struct {
	kind     string
	want     Want
	payload  string // the encoded Payload, or ""
	metadata string // the encoded Metadata, or ""
	cond     json.RawMessage
}

// condition is the JSON object JobTestList reads a want from: each key
// present is a condition.
type condition struct {
	Payload         json.RawMessage `json:"payload,omitempty"`
	Metadata        json.RawMessage `json:"metadata,omitempty"`
	Queue           string          `json:"queue,omitempty"`
	Priority        *int            `json:"priority,omitempty"`
	MaxAttempts     int             `json:"max_attempts,omitempty"`
	Status          tasuki.Status   `json:"status,omitempty"`
	ScheduledAt     *time.Time      `json:"scheduled_at,omitempty"`
	ScheduledAfter  *time.Time      `json:"scheduled_after,omitempty"`
	ScheduledBefore *time.Time      `json:"scheduled_before,omitempty"`
}

var statuses = []tasuki.Status{tasuki.StatusPending, tasuki.StatusRunning, tasuki.StatusCompleted, tasuki.StatusFailed, tasuki.StatusCanceled}

// newCheck checks w, of a job of kind, and encodes it; name says where w
// came from (Want, wants[2]) in its errors.
func newCheck(name, kind string, w *Want) (*check, error) {
	c := &check{kind: kind}
	if w == nil {
		c.cond = json.RawMessage("{}")
		return c, nil
	}
	c.want = *w
	var cond condition
	if !isNil(w.Payload) { // a nil *T, map or slice means any payload, as nil does
		b, err := json.Marshal(w.Payload)
		if err != nil {
			return nil, fmt.Errorf("%s.Payload (%T) does not encode as JSON: %w", name, w.Payload, err)
		}
		cond.Payload, c.payload = b, string(b)
	}
	if w.Metadata != nil {
		b, err := json.Marshal(w.Metadata)
		if err != nil {
			return nil, fmt.Errorf("%s.Metadata does not encode as JSON: %w", name, err)
		}
		cond.Metadata, c.metadata = b, string(b)
	}
	if w.Status != "" && !containsStatus(w.Status) {
		return nil, fmt.Errorf("%s.Status %q is not a job status: use one of %v, or leave it empty for any", name, w.Status, statuses)
	}
	if !w.ScheduledAfter.IsZero() && !w.ScheduledBefore.IsZero() && w.ScheduledAfter.After(w.ScheduledBefore) {
		return nil, fmt.Errorf("%s.ScheduledAfter (%s) is after ScheduledBefore (%s): no job can match; swap them", name,
			formatTime(w.ScheduledAfter), formatTime(w.ScheduledBefore))
	}
	cond.Queue, cond.Priority, cond.MaxAttempts, cond.Status = w.Queue, w.Priority, w.MaxAttempts, w.Status
	cond.ScheduledAt = timeCond(w.ScheduledAt)
	cond.ScheduledAfter = timeCond(w.ScheduledAfter)
	cond.ScheduledBefore = timeCond(w.ScheduledBefore)
	b, err := json.Marshal(cond)
	if err != nil { // a time beyond year 9999
		return nil, fmt.Errorf("%s: a scheduled time cannot be encoded: %w", name, err)
	}
	c.cond = b
	return c, nil
}

func containsStatus(s tasuki.Status) bool {
	for _, v := range statuses {
		if s == v {
			return true
		}
	}
	return false
}

// timeCond is t to the microsecond, as PostgreSQL stores it, or nil for
// the zero time. pgx drops finer digits when it sends a time; PostgreSQL
// would round those of the text sent here.
func timeCond(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.Truncate(time.Microsecond)
	return &t
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// String describes the jobs c matches.
func (c *check) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind %q", c.kind)
	w := &c.want
	var parts []string
	if c.payload != "" {
		parts = append(parts, "payload containing "+clip(c.payload))
	}
	if c.metadata != "" {
		parts = append(parts, "metadata containing "+clip(c.metadata))
	}
	if w.Queue != "" {
		parts = append(parts, fmt.Sprintf("queue %q", w.Queue))
	}
	if w.Priority != nil {
		parts = append(parts, fmt.Sprintf("priority %d", *w.Priority))
	}
	if w.MaxAttempts != 0 {
		parts = append(parts, fmt.Sprintf("max attempts %d", w.MaxAttempts))
	}
	if w.Status != "" {
		parts = append(parts, "status "+string(w.Status))
	}
	if !w.ScheduledAt.IsZero() {
		parts = append(parts, "scheduled at "+formatTime(w.ScheduledAt.Truncate(time.Microsecond)))
	}
	if !w.ScheduledAfter.IsZero() {
		parts = append(parts, "scheduled at or after "+formatTime(w.ScheduledAfter))
	}
	if !w.ScheduledBefore.IsZero() {
		parts = append(parts, "scheduled at or before "+formatTime(w.ScheduledBefore))
	}
	if len(parts) > 0 {
		b.WriteString(" with ")
		b.WriteString(strings.Join(parts, ", "))
	}
	return b.String()
}

// differences says, one line each, how job differs from c in the
// conditions JobTestList found it failing (names).
func (c *check) differences(job *tasuki.Job[json.RawMessage], names []string) []string {
	w := &c.want
	var out []string
	if job.Kind != c.kind {
		out = append(out, fmt.Sprintf("kind: want %q, have %q", c.kind, job.Kind))
	}
	for _, n := range names {
		switch n {
		case "payload":
			out = append(out, fmt.Sprintf("payload: want one containing %s, have %s", clip(c.payload), clip(string(job.Payload))))
		case "metadata":
			out = append(out, fmt.Sprintf("metadata: want one containing %s, have %s", clip(c.metadata), clip(string(job.Metadata))))
		case "queue":
			out = append(out, fmt.Sprintf("queue: want %q, have %q", w.Queue, job.Queue))
		case "priority":
			out = append(out, fmt.Sprintf("priority: want %d, have %d", *w.Priority, job.Priority))
		case "max_attempts":
			out = append(out, fmt.Sprintf("max attempts: want %d, have %d", w.MaxAttempts, job.MaxAttempts))
		case "status":
			out = append(out, fmt.Sprintf("status: want %s, have %s", w.Status, job.Status))
		case "scheduled_at":
			out = append(out, fmt.Sprintf("scheduled at: want %s, have %s", formatTime(w.ScheduledAt.Truncate(time.Microsecond)), formatTime(job.ScheduledAt)))
		case "scheduled_after":
			out = append(out, fmt.Sprintf("scheduled at: want at or after %s, have %s", formatTime(w.ScheduledAfter), formatTime(job.ScheduledAt)))
		case "scheduled_before":
			out = append(out, fmt.Sprintf("scheduled at: want at or before %s, have %s", formatTime(w.ScheduledBefore), formatTime(job.ScheduledAt)))
		default:
			out = append(out, n)
		}
	}
	return out
}

// clip shortens a JSON text for a message, to about 300 bytes.
func clip(s string) string {
	n := 300
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// payloadKind is the kind the Kind method of p's type gives, called on a
// zero value as tasuki calls it (for a pointer type, on a pointer to a
// zero value), or false when it has none.
func payloadKind(p any) (kind string, ok bool) {
	typ := reflect.TypeOf(p)
	if typ == nil {
		return "", false
	}
	defer func() {
		if recover() != nil {
			kind, ok = "", false
		}
	}()
	candidates := []reflect.Value{reflect.New(typ).Elem(), reflect.New(typ)}
	if typ.Kind() == reflect.Pointer {
		candidates = []reflect.Value{reflect.New(typ.Elem())}
	}
	for _, v := range candidates {
		if k, isKinder := v.Interface().(tasuki.Kinder); isKinder {
			return k.Kind(), true
		}
	}
	return "", false
}
