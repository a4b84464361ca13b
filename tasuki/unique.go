package tasuki

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// UniqueOpts make an insert unique: it adds no job while a job of the same
// kind that matches it on what UniqueOpts count exists in one of Statuses,
// and returns that job instead, with Job.Duplicate set. The database
// enforces it (a unique index), so concurrent inserts from any number of
// processes leave exactly one job.
//
// A job's kind always counts; each field adds to it. With none set, a kind
// has at most one job in Statuses at a time.
type UniqueOpts struct {
	// ByArgs counts the payload: jobs whose payloads encode to the same
	// JSON object, whatever the order of its keys and its whitespace, match.
	// Numbers match by their text: 1 and 1.0 differ. Defaults to false.
	ByArgs bool
	// Key counts a key of the caller's (an order number, say): jobs with
	// the same Key match. At most 1,000 characters. Defaults to "" (none).
	Key string
	// ByQueue counts the queue: the same job in two queues is two jobs.
	// Defaults to false.
	ByQueue bool
	// ByPeriod counts the period that holds the job's scheduled time:
	// periods are consecutive spans of ByPeriod from the zero time.Time, in
	// UTC (a day begins at midnight UTC, an hour on the hour), and jobs
	// scheduled in different periods do not match. At least one second.
	// A job inserted without RunAt is scheduled by the inserting process's
	// clock plus Delay, for this purpose. Defaults to 0 (any time).
	ByPeriod time.Duration
	// Statuses are the statuses in which an existing job blocks the
	// insert. They must include StatusPending and StatusRunning, so that a
	// job cannot meet a duplicate on its way from waiting to running and
	// back; add StatusFailed or StatusCanceled to block jobs that ended
	// that way too. Defaults to pending, running and completed: a completed
	// job blocks until it is removed (see retention) or, with ByPeriod,
	// until its period ends. The Statuses that count are the existing
	// job's, given when it was inserted and stored with it: a change of
	// Statuses applies to the jobs inserted after it.
	Statuses []Status
}

// MaxUniqueKeyLength is the longest UniqueOpts.Key, in characters.
const MaxUniqueKeyLength = 1000

// statusBits are the bits of the statuses in a job's unique_statuses.
var statusBits = map[Status]int16{StatusPending: 1, StatusRunning: 2, StatusCompleted: 4, StatusFailed: 8, StatusCanceled: 16}

// defaultUniqueStatuses are UniqueOpts.Statuses when none are given:
// pending, running and completed.
const defaultUniqueStatuses int16 = 1 | 2 | 4

// uniqueness is a checked UniqueOpts.
type uniqueness struct {
	byArgs, byQueue bool
	key             string
	period          time.Duration
	statuses        int16 // a bit per status: statusBits
}

func checkUnique(u *UniqueOpts) (*uniqueness, error) {
	if u == nil {
		return nil, nil
	}
	if n := utf8.RuneCountInString(u.Key); n > MaxUniqueKeyLength || !utf8.ValidString(u.Key) {
		return nil, &InvalidOptionError{Option: "InsertOpts.Unique.Key", Value: u.Key, Reason: fmt.Sprintf("must be valid UTF-8 of at most %d characters", MaxUniqueKeyLength)}
	}
	if u.ByPeriod != 0 && u.ByPeriod < time.Second {
		return nil, &InvalidOptionError{Option: "InsertOpts.Unique.ByPeriod", Value: u.ByPeriod, Reason: "must be 0 (any time) or at least 1s"}
	}
	out := &uniqueness{byArgs: u.ByArgs, byQueue: u.ByQueue, key: u.Key, period: u.ByPeriod, statuses: defaultUniqueStatuses}
	if len(u.Statuses) > 0 {
		out.statuses = 0
		for _, s := range u.Statuses {
			bit, ok := statusBits[s]
			if !ok {
				return nil, &InvalidOptionError{Option: "InsertOpts.Unique.Statuses", Value: u.Statuses, Reason: fmt.Sprintf("%q is not a status", s)}
			}
			out.statuses |= bit
		}
		if live := statusBits[StatusPending] | statusBits[StatusRunning]; out.statuses&live != live {
			return nil, &InvalidOptionError{Option: "InsertOpts.Unique.Statuses", Value: u.Statuses, Reason: "must include pending and running: a job waiting for a retry or being run still blocks its duplicates"}
		}
	}
	return out, nil
}

// key is the job's unique key: a SHA-256 of the kind and of what u
// counts, each part length-prefixed so that no two choices of parts
// collide. payload is the encoded payload; at the job's scheduled time.
func (u *uniqueness) keyOf(kind, queue string, payload []byte, at time.Time) ([]byte, error) {
	h := sha256.New()
	part := func(name string, b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write([]byte(name))
		h.Write(n[:])
		h.Write(b)
	}
	part("tasuki-unique-v1 kind", []byte(kind))
	if u.byQueue {
		part("queue", []byte(queue))
	}
	if u.byArgs {
		canon, err := canonicalJSON(payload)
		if err != nil {
			return nil, err
		}
		part("args", canon)
	}
	if u.key != "" {
		part("key", []byte(u.key))
	}
	if u.period > 0 {
		start := at.UTC().Truncate(u.period)
		part("period", []byte(start.Format(time.RFC3339Nano)+"/"+u.period.String()))
	}
	return h.Sum(nil), nil
}

// canonicalJSON re-encodes b with object keys sorted and no whitespace,
// numbers kept as written.
func canonicalJSON(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		// The payload is valid JSON (it was encoded or checked before):
		// only its depth can stop the decoder.
		return nil, &InvalidPayloadError{Type: "(unique by arguments)", Reason: "it is nested deeper than encoding/json decodes (10000 levels), so its arguments cannot be compared: make the insert unique by Key instead"}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("tasuki: unique by arguments: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
