package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// queueStatsJSON is one queue in the output of stats --json.
type queueStatsJSON struct {
	Queue                 string     `json:"queue"`
	Pending               int64      `json:"pending"`
	Running               int64      `json:"running"`
	Completed             int64      `json:"completed"`
	Failed                int64      `json:"failed"`
	Canceled              int64      `json:"canceled"`
	OldestRunnableSeconds float64    `json:"oldest_runnable_seconds"`
	Paused                bool       `json:"paused"`
	PausedAt              *time.Time `json:"paused_at"`
	// Processes is how many live worker processes work the queue.
	Processes int `json:"processes"`
	// Kinds are the queue's jobs per kind; [] when it has none.
	Kinds []kindStatsJSON `json:"kinds"`
	// UnhandledKinds are the kinds of Kinds whose pending jobs no live
	// worker process handles; [] when there are none.
	UnhandledKinds []string `json:"unhandled_kinds"`
	retentionSecondsJSON
}

// kindStatsJSON is one kind of a queue in the output of stats --json.
type kindStatsJSON struct {
	Kind                  string  `json:"kind"`
	Pending               int64   `json:"pending"`
	Running               int64   `json:"running"`
	Completed             int64   `json:"completed"`
	Failed                int64   `json:"failed"`
	Canceled              int64   `json:"canceled"`
	OldestRunnableSeconds float64 `json:"oldest_runnable_seconds"`
	Processes             int     `json:"processes"`
	Unhandled             bool    `json:"unhandled"`
}

// allKinds is what the KIND column of stats shows on a queue's own line.
const allKinds = "(all)"

// unhandledNote marks, in stats, a kind whose pending jobs no live worker
// process handles.
const unhandledNote = "(no running worker handles this kind)"

func newStatsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show every queue's jobs by status and kind, its delay, whether it is paused and its workers",
		Long: `stats lists every queue that has jobs, has been paused or has a retention
setting, with its jobs counted by status: on one line for the whole queue
(KIND ` + allKinds + `), then on one line per kind of its jobs. Under OLDEST
RUNNABLE, how long the runnable job that has waited longest has been
waiting since its scheduled time ("-" when no job is runnable). A delay that
keeps growing means the queue's workers fall behind, are not running, or the
queue is paused.

PROCESSES counts the live worker processes that work the queue, and on a
kind's line those that handle that kind in it (see 'tasuki processes'). A
kind with pending jobs that no live process handles is marked
"` + unhandledNote + `": its jobs wait until a worker
process with a handler for that kind works the queue. Either none runs, or
the jobs carry a kind no handler is registered for (a misspelt or renamed
kind). stderr then says which.

With --json, each queue's kinds and its retention in effect too, in seconds,
-1 for forever (see 'tasuki retention').

It reads every job once: on a table of many millions of jobs it takes a few
seconds, without holding up the workers.`,
		Example: `  tasuki stats --database-url postgres://app@localhost/app
  tasuki stats --json | jq '.[] | select(.failed > 0) | .queue'
  tasuki stats --json | jq '.[] | {queue, unhandled_kinds} | select(.unhandled_kinds != [])'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				stats, err := adm.Stats(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(toStatsJSON(stats))
				}
				if len(stats) == 0 {
					fmt.Fprintln(a.stdout, "no jobs yet, and no paused queues")
					return nil
				}
				if err := a.printStatsTable(stats); err != nil {
					return err
				}
				if hint := unhandledHint(stats); hint != "" {
					fmt.Fprintln(a.stderr, hint)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table, with each queue's kinds and retention")
	return cmd
}

func toStatsJSON(stats []tasuki.QueueStats) []queueStatsJSON {
	out := make([]queueStatsJSON, 0, len(stats))
	for _, s := range stats {
		q := queueStatsJSON{
			Queue: s.Queue, Pending: s.Pending, Running: s.Running,
			Completed: s.Completed, Failed: s.Failed, Canceled: s.Canceled,
			OldestRunnableSeconds: s.OldestRunnableAge.Seconds(),
			Paused:                s.Paused, PausedAt: s.PausedAt,
			Processes:            s.Processes,
			Kinds:                make([]kindStatsJSON, 0, len(s.Kinds)),
			UnhandledKinds:       []string{},
			retentionSecondsJSON: toRetentionSecondsJSON(s.Retention),
		}
		for _, k := range s.Kinds {
			q.Kinds = append(q.Kinds, kindStatsJSON{
				Kind: k.Kind, Pending: k.Pending, Running: k.Running,
				Completed: k.Completed, Failed: k.Failed, Canceled: k.Canceled,
				OldestRunnableSeconds: k.OldestRunnableAge.Seconds(),
				Processes:             k.Processes, Unhandled: k.Unhandled,
			})
		}
		q.UnhandledKinds = append(q.UnhandledKinds, s.UnhandledKinds()...)
		out = append(out, q)
	}
	return out
}

// printStatsTable prints a line per queue, each followed by a line per
// kind of its jobs.
func (a *app) printStatsTable(stats []tasuki.QueueStats) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tKIND\tPENDING\tRUNNING\tCOMPLETED\tFAILED\tCANCELED\tOLDEST RUNNABLE\tPAUSED\tPROCESSES")
	for _, s := range stats {
		paused := "no"
		if s.Paused {
			paused = "since " + formatTime(s.PausedAt)
		}
		kind := allKinds
		if len(s.Kinds) == 0 {
			kind = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\n", s.Queue, kind, s.Pending, s.Running,
			s.Completed, s.Failed, s.Canceled, formatAge(s.OldestRunnableAge), paused, s.Processes)
		for _, k := range s.Kinds {
			processes := fmt.Sprint(k.Processes)
			if k.Unhandled {
				processes += " " + unhandledNote
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Queue, k.Kind, k.Pending, k.Running,
				k.Completed, k.Failed, k.Canceled, formatAge(k.OldestRunnableAge), paused, processes)
		}
	}
	return tw.Flush()
}

// unhandledHint says which kinds have pending jobs that no live worker
// process handles, and what to do; "" when there are none.
func unhandledHint(stats []tasuki.QueueStats) string {
	var pairs []string
	for _, s := range stats {
		for _, k := range s.UnhandledKinds() {
			pairs = append(pairs, fmt.Sprintf("%s in queue %s", k, s.Queue))
		}
	}
	if len(pairs) == 0 {
		return ""
	}
	return fmt.Sprintf("warning: no running worker handles %s: their pending jobs wait until a worker process "+
		"with a handler for the kind works the queue (see 'tasuki processes')", strings.Join(pairs, ", "))
}
