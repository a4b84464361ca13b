package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// processJSON is one worker process in the output of processes --json.
type processJSON struct {
	ID        string    `json:"id"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Queues    []string  `json:"queues"`
	Kinds     []string  `json:"kinds"`
	StartedAt time.Time `json:"started_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func newProcessesCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "processes",
		Short: "List the running worker processes, with the queues and kinds they work",
		Long: `processes lists the live worker processes, by host and pid: each works the
jobs of each of its kinds in each of its queues. A process records itself
while it runs and renews its record; one that stopped cleanly has removed
it, and one that died drops out once its record expires (EXPIRES).

'tasuki stats' counts them per queue and kind, and marks the kinds with
pending jobs that none of them handles.`,
		Example: `  tasuki processes
  tasuki processes --json | jq '.[] | select(.kinds | index("send_email")) | .host'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				procs, err := adm.Processes(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					out := make([]processJSON, 0, len(procs))
					for _, p := range procs {
						out = append(out, processJSON{ID: p.ID, Host: p.Host, PID: p.PID, Queues: p.Queues, Kinds: p.Kinds,
							StartedAt: p.StartedAt, ExpiresAt: p.ExpiresAt})
					}
					return a.printJSON(out)
				}
				if len(procs) == 0 {
					fmt.Fprintln(a.stdout, "no worker process is running")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tHOST\tPID\tQUEUES\tKINDS\tSTARTED\tEXPIRES")
				for _, p := range procs {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.ID, p.Host, p.PID, strings.Join(p.Queues, ","), strings.Join(p.Kinds, ","),
						formatTime(&p.StartedAt), formatTime(&p.ExpiresAt))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}
