// Package jobrow turns a stored job row into the job its handlers and
// tests see, for the packages that read rows with the generated queries
// outside package tasuki (which has its own, as it cannot import this).
package jobrow

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// Raw converts row into a job with its payload as raw JSON. An error
// history that does not decode gives an error, together with the job
// (without the history).
func Raw(row *db.TasukiJob) (*tasuki.Job[json.RawMessage], error) {
	job := &tasuki.Job[json.RawMessage]{
		ID: row.ID, Queue: row.Queue, Kind: row.Kind, Status: tasuki.Status(row.Status), Priority: int(row.Priority),
		Payload: json.RawMessage(row.Payload), Attempt: int(row.Attempts), Snoozes: int(row.Snoozes), MaxAttempts: int(row.MaxAttempts),
		ScheduledAt: row.ScheduledAt, CreatedAt: row.CreatedAt, AttemptedAt: row.AttemptedAt,
		FinishedAt: row.FinishedAt, Metadata: json.RawMessage(row.Metadata),
		UniqueKey: row.UniqueKey, Timeout: time.Duration(row.TimeoutMs.Int64) * time.Millisecond,
	}
	if len(row.Errors) > 2 { // "[]" is the empty history
		if err := json.Unmarshal(row.Errors, &job.Errors); err != nil {
			return job, fmt.Errorf("tasuki: error history of job %d: %w", row.ID, err)
		}
	}
	return job, nil
}
