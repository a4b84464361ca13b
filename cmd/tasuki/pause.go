package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// queuesJSON is the output of pause --json and resume --json.
type queuesJSON struct {
	// Queues are the queues acted on, in the order given.
	Queues []queueChangeJSON `json:"queues"`
	// Failed are the queues that could not be acted on, and why.
	Failed []queueFailureJSON `json:"failed"`
}

type queueChangeJSON struct {
	Queue string `json:"queue"`
	// Paused is whether the queue is paused now.
	Paused bool `json:"paused"`
	// Changed is false when the queue already was as asked.
	Changed bool `json:"changed"`
}

type queueFailureJSON struct {
	Queue string `json:"queue"`
	Error string `json:"error"`
}

// queueOp is what pause and resume have in common.
type queueOp struct {
	verb   string // "paused", "resumed"
	paused bool   // whether the queue is paused after the operation
	do     func(adm *tasuki.Admin, ctx context.Context, queue string) (changed bool, err error)
	// changed and unchanged are the lines printed for a queue.
	changed, unchanged func(queue string) string
}

// runQueues acts on each queue given, reporting each; a queue that cannot
// be acted on (unknown, invalid name) is reported and the others are tried.
func (a *app) runQueues(cmd *cobra.Command, op queueOp, queues []string, asJSON bool) error {
	ctx := cmd.Context()
	out := queuesJSON{Queues: []queueChangeJSON{}, Failed: []queueFailureJSON{}}
	return a.withAdmin(ctx, func(adm *tasuki.Admin) error {
		var failed []error
		for _, q := range queues {
			changed, err := op.do(adm, ctx, q)
			var invalid *tasuki.InvalidOptionError
			switch {
			case err != nil && !errors.Is(err, tasuki.ErrQueueNotFound) && !errors.As(err, &invalid):
				return err
			case err != nil:
				failed = append(failed, err)
				out.Failed = append(out.Failed, queueFailureJSON{Queue: q, Error: withoutPrefix(err)})
			case asJSON:
				out.Queues = append(out.Queues, queueChangeJSON{Queue: q, Paused: op.paused, Changed: changed})
			case changed:
				fmt.Fprintln(a.stdout, op.changed(q))
			default:
				fmt.Fprintln(a.stdout, op.unchanged(q))
			}
		}
		if asJSON {
			if err := a.printJSON(out); err != nil {
				return err
			}
		}
		return joinFailuresOf("queues", op.verb, failed, len(queues))
	})
}

func newPauseCmd(a *app) *cobra.Command {
	var asJSON bool
	op := queueOp{
		verb:   "paused",
		paused: true,
		do:     (*tasuki.Admin).PauseQueue,
		changed: func(q string) string {
			return fmt.Sprintf("paused queue %s: its workers start no new jobs until 'tasuki resume %s'", q, q)
		},
		unchanged: func(q string) string { return fmt.Sprintf("queue %s was already paused; nothing changed", q) },
	}
	cmd := &cobra.Command{
		Use:   "pause <queue>...",
		Short: "Stop workers from starting new jobs of a queue",
		Long: `pause pauses queues in every worker process at once: their workers start
no new job until 'tasuki resume'. Jobs already running finish as usual, and
jobs can still be inserted; they wait. A queue needs no jobs to be paused,
and pausing a paused queue changes nothing, which pause says. 'tasuki stats'
shows which queues are paused.`,
		Example: `  tasuki pause emails
  tasuki pause emails reports
  tasuki pause emails --json | jq '.queues[].changed'`,
		Args:        cobra.MinimumNArgs(1),
		Annotations: map[string]string{argsAnnotation: argsQueues},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runQueues(cmd, op, args, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text: each queue, whether it changed, and the queues that failed")
	return cmd
}

func newResumeCmd(a *app) *cobra.Command {
	var asJSON bool
	op := queueOp{
		verb:      "resumed",
		paused:    false,
		do:        (*tasuki.Admin).ResumeQueue,
		changed:   func(q string) string { return fmt.Sprintf("resumed queue %s: its workers start its jobs again", q) },
		unchanged: func(q string) string { return fmt.Sprintf("queue %s is not paused; nothing changed", q) },
	}
	cmd := &cobra.Command{
		Use:   "resume <queue>...",
		Short: "Let workers start jobs of a paused queue again",
		Long: `resume ends the pause of queues: their idle workers are woken and start
the waiting jobs at once. Resuming a queue that is not paused changes
nothing, which resume says. A queue tasuki does not know (no jobs, never
paused: often a mistyped name) is an error; the other queues given are
resumed, and the command exits with status 1.`,
		Example: `  tasuki resume emails
  tasuki resume emails --json | jq '.queues[].changed'`,
		Args:        cobra.MinimumNArgs(1),
		Annotations: map[string]string{argsAnnotation: argsQueues},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runQueues(cmd, op, args, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text: each queue, whether it changed, and the queues that failed")
	return cmd
}
