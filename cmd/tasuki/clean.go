package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tasukiq/tasuki/tasuki"
)

// cleanJSON is the output of clean --json.
type cleanJSON struct {
	// DryRun is whether --dry-run was given: nothing was deleted.
	DryRun bool `json:"dry_run"`
	// Matched is how many jobs matched when clean counted them first.
	Matched int64 `json:"matched"`
	// Deleted is how many jobs were deleted; 0 with --dry-run. It can
	// differ from Matched when workers finish or clean jobs meanwhile, or
	// when clean is interrupted.
	Deleted int64 `json:"deleted"`
}

func newCleanCmd(a *app) *cobra.Command {
	var (
		asJSON     bool
		olderThan  string
		queue      string
		kind       string
		statuses   []string
		batchSize  int
		dryRun     bool
		noProgress bool
	)
	finished := []string{"completed", "failed", "canceled"}
	cmd := &cobra.Command{
		Use:   "clean --older-than <duration>",
		Short: "Delete finished jobs older than a given age",
		Long: `clean deletes completed, failed and canceled jobs that finished longer ago
than --older-than (90m, 24h, 7d, ...; 0s for every finished job), of every
queue or of --queue, of every kind or of --kind, of every finished status or
of --status. Pending and running jobs are never deleted.

It deletes in batches of --batch-size, each its own short statement, so it
never holds up the workers for long and an interruption (Ctrl-C) keeps what
it deleted so far. On a terminal it shows its progress. --dry-run only
counts.

Workers can do this continuously, with a retention per status; clean is for
a one-off purge.`,
		Example: `  tasuki clean --older-than 7d
  tasuki clean --older-than 24h --queue emails --status completed
  tasuki clean --older-than 30d --dry-run
  tasuki clean --older-than 7d --json | jq .deleted`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			age, err := parseAge(olderThan)
			if err != nil || age < 0 {
				return fmt.Errorf("--older-than %q: give a duration such as 90m, 24h or 7d", olderThan)
			}
			if batchSize < 1 || batchSize > tasuki.MaxCleanBatchSize {
				return fmt.Errorf("--batch-size %d: give 1 to %d", batchSize, tasuki.MaxCleanBatchSize)
			}
			st, err := parseStatuses(statuses, finished)
			if err != nil {
				return err
			}
			if err := checkKindFlag(kind); err != nil {
				return err
			}
			p := tasuki.CleanParams{
				Queue:          queue,
				Kind:           kind,
				Statuses:       st,
				FinishedBefore: a.now().Add(-age),
				BatchSize:      batchSize,
			}
			return a.withAdmin(ctx, func(adm *tasuki.Admin) error {
				total, err := adm.CleanCount(ctx, p)
				if err != nil {
					return err
				}
				out := cleanJSON{DryRun: dryRun, Matched: total}
				switch {
				case asJSON && (dryRun || total == 0):
					return a.printJSON(out)
				case dryRun:
					fmt.Fprintf(a.stdout, "would delete %d %s\n", total, plural(total, "job"))
					return nil
				case total == 0:
					fmt.Fprintln(a.stdout, "deleted 0 jobs: none finished that long ago")
					return nil
				}
				var bar *progressbar.ProgressBar
				if !noProgress && isTerminal(a.stderr) {
					bar = progressbar.NewOptions64(total,
						progressbar.OptionSetWriter(a.stderr),
						progressbar.OptionSetDescription("deleting"),
						progressbar.OptionShowCount(),
						progressbar.OptionThrottle(100*time.Millisecond),
						progressbar.OptionClearOnFinish(),
					)
					p.OnBatch = func(deleted int64) { _ = bar.Set64(min(deleted, total)) }
				}
				deleted, err := adm.Clean(ctx, p)
				if bar != nil {
					_ = bar.Finish()
				}
				// What was deleted is reported even when interrupted.
				if asJSON {
					out.Deleted = deleted
					if jsonErr := a.printJSON(out); err == nil {
						err = jsonErr
					}
					return err
				}
				fmt.Fprintf(a.stdout, "deleted %d %s\n", deleted, plural(deleted, "job"))
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&olderThan, "older-than", "", "delete jobs that finished longer ago than this (required)")
	f.StringVar(&queue, "queue", "", "only jobs of this queue (default: every queue)")
	f.StringVar(&kind, "kind", "", "only jobs of this kind (default: every kind)")
	f.StringSliceVar(&statuses, "status", nil, "only jobs in these statuses: completed, failed or canceled (default: all three)")
	f.IntVar(&batchSize, "batch-size", tasuki.DefaultCleanBatchSize, "most jobs deleted per statement")
	f.BoolVar(&dryRun, "dry-run", false, "only count the jobs that would be deleted")
	f.BoolVar(&noProgress, "no-progress", false, "hide the progress bar")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of text: the jobs matched and deleted")
	_ = cmd.MarkFlagRequired("older-than")
	return cmd
}

// isTerminal reports whether w is a terminal, where a progress bar redrawn
// in place makes sense; in a log file it would be noise.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
