package main

// What the operating commands (stats, list, show, cancel, retry, clean,
// pause, resume, processes) share: the connection, error advice, flag
// parsing and output formats.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tasukiq/tasuki/tasuki"
)

// withAdmin connects to the configured database, which must be given, and
// runs f with an Admin on it. The "using database" log line is left out:
// these commands print results that scripts read, and an error must stay
// one line. A missing schema is reported with the command that fixes it.
func (a *app) withAdmin(ctx context.Context, f func(*tasuki.Admin) error) error {
	quiet := *a
	quiet.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	pool, cleanup, err := quiet.openDB(ctx, dbOptions{})
	if err != nil {
		return err
	}
	defer cleanup()
	adm, err := tasuki.NewAdmin(pool)
	if err != nil {
		return err
	}
	err = f(adm)
	if errors.Is(err, tasuki.ErrSchemaMissing) {
		return fmt.Errorf("the tasuki schema is missing from %s: run 'tasuki migrate up' first", redactURL(a.url()))
	}
	return err
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jobJSON is a job as the --json outputs print it: snake_case names, the
// payload and metadata as the JSON they are, times in RFC 3339.
type jobJSON struct {
	ID          int64                 `json:"id"`
	Queue       string                `json:"queue"`
	Kind        string                `json:"kind"`
	Status      tasuki.Status         `json:"status"`
	Priority    int                   `json:"priority"`
	Attempt     int                   `json:"attempt"`
	MaxAttempts int                   `json:"max_attempts"`
	Snoozes     int                   `json:"snoozes"`
	UniqueKey   string                `json:"unique_key,omitempty"`
	TimeoutMs   int64                 `json:"timeout_ms,omitempty"`
	ScheduledAt time.Time             `json:"scheduled_at"`
	CreatedAt   time.Time             `json:"created_at"`
	AttemptedAt *time.Time            `json:"attempted_at"`
	FinishedAt  *time.Time            `json:"finished_at"`
	Payload     json.RawMessage       `json:"payload"`
	Metadata    json.RawMessage       `json:"metadata"`
	Errors      []tasuki.AttemptError `json:"errors"`
}

func toJobJSON(j *tasuki.Job[json.RawMessage]) jobJSON {
	errs := j.Errors
	if errs == nil {
		errs = []tasuki.AttemptError{}
	}
	out := jobJSON{
		ID: j.ID, Queue: j.Queue, Kind: j.Kind, Status: j.Status, Priority: j.Priority,
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Snoozes: j.Snoozes, TimeoutMs: j.Timeout.Milliseconds(),
		ScheduledAt: j.ScheduledAt, CreatedAt: j.CreatedAt, AttemptedAt: j.AttemptedAt, FinishedAt: j.FinishedAt,
		Payload: j.Payload, Metadata: j.Metadata, Errors: errs,
	}
	if j.UniqueKey != nil {
		out.UniqueKey = fmt.Sprintf("%x", j.UniqueKey)
	}
	return out
}

// timeLayout is how tables show times: local time, to the second.
const timeLayout = "2006-01-02 15:04:05"

func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}

// formatAge shows a duration the way a person reads a queue's delay:
// "-" for none, then 45s, 3m12s, 2h05m, 3d04h.
func formatAge(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// oneLine shortens an error text for a table cell: its first line, at most
// max characters.
func oneLine(s string, max int) string {
	if s == "" {
		return "-"
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

var allStatusNames = []string{"pending", "running", "completed", "failed", "canceled"}

// parseStatuses checks the values of a --status flag (repeated or comma
// separated) against the statuses the command accepts.
func parseStatuses(values []string, allowed []string) ([]tasuki.Status, error) {
	var out []tasuki.Status
	for _, v := range values {
		v = strings.ToLower(strings.TrimSpace(v))
		ok := false
		for _, s := range allowed {
			ok = ok || v == s
		}
		if !ok {
			return nil, fmt.Errorf("--status %q: use %s", v, orList(allowed))
		}
		out = append(out, tasuki.Status(v))
	}
	return out, nil
}

// checkKindFlag checks a --kind value: "" (not given) or a valid kind.
func checkKindFlag(kind string) error {
	if kind == "" {
		return nil
	}
	if err := tasuki.ValidateKind("--kind", kind); err != nil {
		return fmt.Errorf("--kind %q: %s", kind, err.(*tasuki.InvalidOptionError).Reason)
	}
	return nil
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// parseIDs reads job ids given as arguments.
func parseIDs(args []string) ([]int64, error) {
	ids := make([]int64, 0, len(args))
	for _, arg := range args {
		id, err := strconv.ParseInt(arg, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(arg, "-"):
			return nil, fmt.Errorf("%q is not a job id: job ids are at most %d", arg, int64(math.MaxInt64))
		case err != nil || id <= 0:
			return nil, fmt.Errorf("%q is not a job id: job ids are positive integers, as 'tasuki list' prints them", arg)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// daysPrefix matches a leading number of days, which time.ParseDuration
// does not know: "7d", "1d12h".
var daysPrefix = regexp.MustCompile(`^(\d+)d(.*)$`)

// maxDays is the most days a time.Duration holds.
const maxDays = math.MaxInt64 / int64(24*time.Hour)

// errDurationTooLong is parseAge's error for a duration over about 292
// years, which time.Duration cannot hold.
var errDurationTooLong = fmt.Errorf("duration longer than %dd", maxDays)

// parseAge reads a duration such as 90s, 24h or 7d (days are 24 hours).
func parseAge(s string) (time.Duration, error) {
	var days time.Duration
	if m := daysPrefix.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > maxDays {
			return 0, errDurationTooLong
		}
		days = time.Duration(n) * 24 * time.Hour
		if s = m[2]; s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d > 0 && days > math.MaxInt64-d {
		return 0, errDurationTooLong
	}
	return days + d, nil
}

// parseTimeFlag reads --since or --until: a time (RFC 3339, or a local
// date and time) or a duration before now.
func parseTimeFlag(flag, s string, now time.Time) (time.Time, error) {
	if d, err := parseAge(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{timeLayout, "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: give a time (2024-05-01, \"2024-05-01 14:00\", 2024-05-01T14:00:00Z) or a duration before now (90m, 24h, 7d)", flag, s)
}

// joinFailures makes one line of the errors of several jobs or queues.
func joinFailures(verb string, failed []error, total int) error {
	return joinFailuresOf("jobs", verb, failed, total)
}

func joinFailuresOf(things, verb string, failed []error, total int) error {
	switch {
	case len(failed) == 0:
		return nil
	case total == 1:
		return failed[0]
	}
	texts := make([]string, len(failed))
	for i, err := range failed {
		texts[i] = withoutPrefix(err)
	}
	return fmt.Errorf("%d of %d %s not %s: %s", len(failed), total, things, verb, strings.Join(texts, "; "))
}

// withoutPrefix is an error's text for inside a line or a JSON field,
// without the "tasuki: " that starts the line.
func withoutPrefix(err error) string {
	return strings.TrimPrefix(errorLine(err), "tasuki: ")
}
