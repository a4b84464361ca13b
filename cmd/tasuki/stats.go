package main

import (
	"fmt"
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
	retentionSecondsJSON
}

func newStatsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show every queue's jobs by status, its delay and whether it is paused",
		Long: `stats lists every queue that has jobs, has been paused or has a retention
setting, with its jobs counted by status, and under OLDEST RUNNABLE how long
the runnable job that has waited longest has been waiting since its
scheduled time ("-" when no job is runnable). A delay that keeps growing
means the queue's workers fall behind, are not running, or the queue is
paused. With --json, each queue's retention in effect too, in seconds, -1
for forever (see 'tasuki retention').

It reads every job once: on a table of many millions of jobs it takes a few
seconds, without holding up the workers.`,
		Example: `  tasuki stats --database-url postgres://app@localhost/app
  tasuki stats --json | jq '.[] | select(.failed > 0) | .queue'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				stats, err := adm.Stats(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					out := make([]queueStatsJSON, 0, len(stats))
					for _, s := range stats {
						out = append(out, queueStatsJSON{
							Queue: s.Queue, Pending: s.Pending, Running: s.Running,
							Completed: s.Completed, Failed: s.Failed, Canceled: s.Canceled,
							OldestRunnableSeconds: s.OldestRunnableAge.Seconds(),
							Paused:                s.Paused, PausedAt: s.PausedAt,
							retentionSecondsJSON: toRetentionSecondsJSON(s.Retention),
						})
					}
					return a.printJSON(out)
				}
				if len(stats) == 0 {
					fmt.Fprintln(a.stdout, "no jobs yet, and no paused queues")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "QUEUE\tPENDING\tRUNNING\tCOMPLETED\tFAILED\tCANCELED\tOLDEST RUNNABLE\tPAUSED")
				for _, s := range stats {
					paused := "no"
					if s.Paused {
						paused = "since " + formatTime(s.PausedAt)
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Queue, s.Pending, s.Running,
						s.Completed, s.Failed, s.Canceled, formatAge(s.OldestRunnableAge), paused)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table, with each queue's retention")
	return cmd
}
