package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

func newPauseCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pause <queue>...",
		Short: "Stop workers from starting new jobs of a queue",
		Long: `pause pauses queues in every worker process at once: their workers start
no new job until 'tasuki resume'. Jobs already running finish as usual, and
jobs can still be inserted; they wait. A queue needs no jobs to be paused,
and pausing a paused queue changes nothing. 'tasuki stats' shows which
queues are paused.`,
		Example: `  tasuki pause emails
  tasuki pause emails reports`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				for _, q := range args {
					if _, err := adm.PauseQueue(cmd.Context(), q); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "paused queue %s: its workers start no new jobs until 'tasuki resume %s'\n", q, q)
				}
				return nil
			})
		},
	}
}

func newResumeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "resume <queue>...",
		Short: "Let workers start jobs of a paused queue again",
		Long: `resume ends the pause of queues: their idle workers are woken and start
the waiting jobs at once. Resuming a queue that is not paused changes
nothing.`,
		Example: `  tasuki resume emails`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				for _, q := range args {
					if _, err := adm.ResumeQueue(cmd.Context(), q); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "resumed queue %s\n", q)
				}
				return nil
			})
		},
	}
}
