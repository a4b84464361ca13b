package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// periodicJSON is one schedule in the output of periodic --json.
type periodicJSON struct {
	Name      string     `json:"name"`
	Kind      string     `json:"kind"`
	Schedule  string     `json:"schedule"`
	LastTick  *time.Time `json:"last_tick"`
	NextTick  *time.Time `json:"next_tick"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func newPeriodicCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "periodic",
		Short: "List the periodic schedules, with their last and next runs",
		Long: `periodic lists every periodic schedule (worker.Periodic) the database has
seen from a worker: the kind it enqueues, when its ticks are, the last tick
a job was enqueued for (LAST), the next one (NEXT), and when a worker last
recorded it (SEEN). A schedule no worker runs any more stays listed, with
its SEEN in the past.`,
		Example: `  tasuki periodic
  tasuki periodic --json | jq '.[] | select(.kind == "nightly_report")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				list, err := adm.Periodic(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					out := make([]periodicJSON, 0, len(list))
					for _, p := range list {
						out = append(out, periodicJSON{Name: p.Name, Kind: p.Kind, Schedule: p.Schedule,
							LastTick: p.LastTick, NextTick: p.NextTick, UpdatedAt: p.UpdatedAt})
					}
					return a.printJSON(out)
				}
				if len(list) == 0 {
					fmt.Fprintln(a.stdout, "no periodic schedule has run")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tSCHEDULE\tLAST\tNEXT\tSEEN")
				for _, p := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Kind, p.Schedule,
						formatTime(p.LastTick), formatTime(p.NextTick), formatTime(&p.UpdatedAt))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}
