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
// one by one with a result line each, or on every job of a queue, a kind
// or both in one statement.
type bulkOp struct {
	verb     string   // "canceled", "retried"
	statuses []string // what --status accepts
	one      func(adm *tasuki.Admin, ctx context.Context, id int64) (*tasuki.Job[json.RawMessage], error)
	many     func(adm *tasuki.Admin, ctx context.Context, f tasuki.JobFilter) (int64, error)
}

// bulkJSON is the output of cancel --json and retry --json.
type bulkJSON struct {
	// Count is how many jobs were changed.
	Count int64 `json:"count"`
	// Queue is the --queue given; "" when none was.
	Queue string `json:"queue"`
	// Kind is the --kind given; "" when none was.
	Kind string `json:"kind"`
	// Jobs are the jobs given by id that were changed, as stored after;
	// empty with --queue or --kind, where only Count is known.
	Jobs []jobJSON `json:"jobs"`
	// Failed are the jobs given by id that were not changed, and why.
	Failed []jobFailureJSON `json:"failed"`
}

type jobFailureJSON struct {
	ID    int64  `json:"id"`
	Error string `json:"error"`
}

// bulkFlags are the flags cancel and retry share.
type bulkFlags struct {
	queue, kind string
	statuses    []string
	asJSON      bool
}

func (f *bulkFlags) register(cmd *cobra.Command, verb, statusHelp string) {
	cmd.Flags().StringVar(&f.queue, "queue", "", verb+" the jobs of this queue (with --kind: of that kind in it)")
	cmd.Flags().StringVar(&f.kind, "kind", "", verb+" the jobs of this kind (with --queue: in that queue)")
	cmd.Flags().StringSliceVar(&f.statuses, "status", nil, "with --queue or --kind: "+statusHelp)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON instead of text: the count, the jobs changed and those not")
	cmd.Annotations = map[string]string{argsAnnotation: argsJobIDs}
}

func (a *app) runBulk(cmd *cobra.Command, op bulkOp, args []string, f bulkFlags) error {
	ctx := cmd.Context()
	filtered := f.queue != "" || f.kind != ""
	switch {
	case len(args) == 0 && !filtered:
		return fmt.Errorf("give job ids, or --queue or --kind or both (see '%s --help')", cmd.CommandPath())
	case len(args) > 0 && filtered:
		return errors.New("job ids do not go with --queue or --kind: give the ids, or the filters")
	case len(args) > 0 && len(f.statuses) > 0:
		return errors.New("--status goes with --queue or --kind; with job ids, each job's own status decides")
	}
	if err := checkKindFlag(f.kind); err != nil {
		return err
	}
	ids, err := parseIDs(args)
	if err != nil {
		return err
	}
	st, err := parseStatuses(f.statuses, op.statuses)
	if err != nil {
		return err
	}
	out := bulkJSON{Queue: f.queue, Kind: f.kind, Jobs: []jobJSON{}, Failed: []jobFailureJSON{}}
	return a.withAdmin(ctx, func(adm *tasuki.Admin) error {
		if filtered {
			n, err := op.many(adm, ctx, tasuki.JobFilter{Queue: f.queue, Kind: f.kind, Statuses: st})
			if err != nil {
				return err
			}
			if f.asJSON {
				out.Count = n
				return a.printJSON(out)
			}
			fmt.Fprintf(a.stdout, "%s %d %s%s\n", op.verb, n, plural(n, "job"), jobScope(f.queue, f.kind))
			return nil
		}
		var failed []error
		for _, id := range ids {
			job, err := op.one(adm, ctx, id)
			switch {
			case err != nil && !jobRefused(err):
				return err
			case err != nil:
				failed = append(failed, err)
				out.Failed = append(out.Failed, jobFailureJSON{ID: id, Error: withoutPrefix(err)})
			case f.asJSON:
				out.Jobs = append(out.Jobs, toJobJSON(job))
			default:
				fmt.Fprintf(a.stdout, "%s job %d (queue %s)\n", op.verb, job.ID, job.Queue)
			}
		}
		if f.asJSON {
			out.Count = int64(len(out.Jobs))
			if err := a.printJSON(out); err != nil {
				return err
			}
		}
		return joinFailures(op.verb, failed, len(ids))
	})
}

// jobScope says which jobs a --queue and a --kind select, for a result
// line: " in queue emails", " of kind send_email", or both.
func jobScope(queue, kind string) string {
	var s string
	if kind != "" {
		s += " of kind " + kind
	}
	if queue != "" {
		s += " in queue " + queue
	}
	return s
}

// jobRefused reports whether err concerns only the job it was about: not
// found, or in a status the operation does not apply to. The other jobs
// given are tried after it; any other error stops the command.
func jobRefused(err error) bool {
	var finished *tasuki.JobFinishedError
	var status *tasuki.JobStatusError
	return errors.Is(err, tasuki.ErrJobNotFound) || errors.As(err, &finished) || errors.As(err, &status)
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func newCancelCmd(a *app) *cobra.Command {
	var flags bulkFlags
	op := bulkOp{
		verb:     "canceled",
		statuses: []string{"pending", "running"},
		one:      (*tasuki.Admin).Cancel,
		many:     (*tasuki.Admin).CancelMany,
	}
	cmd := &cobra.Command{
		Use:   "cancel <id>... | [--queue <queue>] [--kind <kind>] [--status pending|running]",
		Short: "Cancel pending or running jobs, by id, queue or kind",
		Long: `cancel cancels jobs that are pending or running; finished jobs (completed,
failed or canceled) are never changed. A running job's handler sees its
context canceled at once, and whatever it returns later cannot undo the
cancellation.

Give job ids to cancel those jobs, one line each; a job that cannot be
canceled (not found, already finished) is reported and the command exits
with status 1 after trying the others. Or give --queue to cancel every
pending and running job of a queue in one statement, --kind to cancel those
of a kind (in every queue, or with --queue in that one), and --status to
cancel only the pending or only the running ones.`,
		Example: `  tasuki cancel 81234 81235
  tasuki cancel --queue emails --status pending
  tasuki cancel --kind send_newsletter --queue emails
  tasuki cancel 81234 --json | jq .count`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBulk(cmd, op, args, flags)
		},
	}
	flags.register(cmd, "cancel", "only jobs in this status, pending or running (default: both)")
	return cmd
}

func newRetryCmd(a *app) *cobra.Command {
	var flags bulkFlags
	op := bulkOp{
		verb:     "retried",
		statuses: []string{"failed", "canceled"},
		one:      (*tasuki.Admin).Retry,
		many:     (*tasuki.Admin).RetryMany,
	}
	cmd := &cobra.Command{
		Use:   "retry <id>... | [--queue <queue>] [--kind <kind>] [--status failed|canceled]",
		Short: "Run failed or canceled jobs again, by id, queue or kind",
		Long: `retry puts failed or canceled jobs back to pending, to run at once with a
fresh set of attempts; their error history is kept. The queue's workers are
woken. Pending, running and completed jobs are not changed.

Give job ids to retry those jobs, one line each; a job that cannot be
retried (not found, not failed or canceled) is reported and the command
exits with status 1 after trying the others. Or give --queue to retry every
failed and canceled job of a queue in one statement, --kind to retry those
of a kind (in every queue, or with --queue in that one), and --status to
retry only the failed or only the canceled ones.`,
		Example: `  tasuki retry 81234
  tasuki retry --queue emails --status failed
  tasuki retry --kind send_email --status failed
  tasuki retry --queue emails --json | jq .count`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBulk(cmd, op, args, flags)
		},
	}
	flags.register(cmd, "retry", "only jobs in this status, failed or canceled (default: both)")
	return cmd
}
