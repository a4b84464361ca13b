package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// bulkOp is what cancel and retry have in common: act on jobs given by id,
// one by one with a result line each, or on a whole queue in one
// statement.
type bulkOp struct {
	verb     string   // "canceled", "retried"
	statuses []string // what --status accepts
	one      func(adm *tasuki.Admin, ctx context.Context, id int64) (*tasuki.Job[json.RawMessage], error)
	many     func(adm *tasuki.Admin, ctx context.Context, f tasuki.JobFilter) (int64, error)
}

func (a *app) runBulk(cmd *cobra.Command, op bulkOp, args []string, queue string, statuses []string) error {
	ctx := cmd.Context()
	switch {
	case len(args) == 0 && queue == "":
		return fmt.Errorf("give job ids or --queue (see '%s --help')", cmd.CommandPath())
	case len(args) > 0 && queue != "":
		return errors.New("give job ids or --queue, not both")
	case len(args) > 0 && len(statuses) > 0:
		return errors.New("--status goes with --queue; with job ids, each job's own status decides")
	}
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	st, err := parseStatuses(statuses, op.statuses)
	if err != nil {
		return err
	}
	return a.withAdmin(ctx, func(adm *tasuki.Admin) error {
		if queue != "" {
			n, err := op.many(adm, ctx, tasuki.JobFilter{Queue: queue, Statuses: st})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %d %s in queue %s\n", op.verb, n, plural(n, "job"), queue)
			return nil
		}
		var failed []error
		for _, id := range ids {
			job, err := op.one(adm, ctx, id)
			switch {
			case errors.Is(err, tasuki.ErrSchemaMissing) || ctx.Err() != nil:
				return err
			case err != nil:
				failed = append(failed, err)
			default:
				fmt.Fprintf(a.stdout, "%s job %d (queue %s)\n", op.verb, job.ID, job.Queue)
			}
		}
		return joinFailures(op.verb, failed, len(ids))
	})
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func newCancelCmd(a *app) *cobra.Command {
	var (
		queue    string
		statuses []string
	)
	op := bulkOp{
		verb:     "canceled",
		statuses: []string{"pending", "running"},
		one:      (*tasuki.Admin).Cancel,
		many:     (*tasuki.Admin).CancelMany,
	}
	cmd := &cobra.Command{
		Use:   "cancel <id>... | --queue <queue> [--status pending|running]",
		Short: "Cancel pending or running jobs, by id or a whole queue",
		Long: `cancel cancels jobs that are pending or running; finished jobs (completed,
failed or canceled) are never changed. A running job's handler sees its
context canceled at once, and whatever it returns later cannot undo the
cancellation.

Give job ids to cancel those jobs, one line each; a job that cannot be
canceled (not found, already finished) is reported and the command exits
with status 1 after trying the others. Or give --queue to cancel every
pending and running job of a queue in one statement, or with --status only
the pending or only the running ones.`,
		Example: `  tasuki cancel 81234 81235
  tasuki cancel --queue emails --status pending`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBulk(cmd, op, args, queue, statuses)
		},
	}
	cmd.Flags().StringVar(&queue, "queue", "", "cancel the jobs of this queue")
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "with --queue: only jobs in this status, pending or running (default: both)")
	return cmd
}

func newRetryCmd(a *app) *cobra.Command {
	var (
		queue    string
		statuses []string
	)
	op := bulkOp{
		verb:     "retried",
		statuses: []string{"failed", "canceled"},
		one:      (*tasuki.Admin).Retry,
		many:     (*tasuki.Admin).RetryMany,
	}
	cmd := &cobra.Command{
		Use:   "retry <id>... | --queue <queue> [--status failed|canceled]",
		Short: "Run failed or canceled jobs again, by id or a whole queue",
		Long: `retry puts failed or canceled jobs back to pending, to run at once with a
fresh set of attempts; their error history is kept. The queue's workers are
woken. Pending, running and completed jobs are not changed.

Give job ids to retry those jobs, one line each; a job that cannot be
retried (not found, not failed or canceled) is reported and the command
exits with status 1 after trying the others. Or give --queue to retry every
failed and canceled job of a queue in one statement, or with --status only
the failed or only the canceled ones.`,
		Example: `  tasuki retry 81234
  tasuki retry --queue emails --status failed`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBulk(cmd, op, args, queue, statuses)
		},
	}
	cmd.Flags().StringVar(&queue, "queue", "", "retry the jobs of this queue")
	cmd.Flags().StringSliceVar(&statuses, "status", nil, "with --queue: only jobs in this status, failed or canceled (default: both)")
	return cmd
}
