package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// listJSON is the output of list --json.
type listJSON struct {
	Jobs []jobJSON `json:"jobs"`
	// Next is the --after of the next page; 0 on the last page.
	Next int64 `json:"next"`
}

func newListCmd(a *app) *cobra.Command {
	var (
		queue        string
		statuses     []string
		since, until string
		limit        int
		after        int64
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first, a page at a time",
		Long: `list prints jobs newest first (by id), filtered by queue, status and
creation time, --limit per page (1 to 10000). When more jobs match, it says
on stderr which --after gives the next page; repeat the same filters with
it. Every job appears on exactly one page, even when many were created at
the same moment.

--since and --until take a time (2024-05-01, "2024-05-01 14:00" in local
time, 2024-05-01T14:00:00Z) or a duration before now (90m, 24h, 7d); --since
is inclusive, --until exclusive. Use 'tasuki show <id>' for a job's payload
and full error history.`,
		Example: `  tasuki list --queue emails --status failed
  tasuki list --status pending,running --since 1h --limit 20
  tasuki list --queue emails --after 81234
  tasuki list --status failed --json | jq '.jobs[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := tasuki.ListParams{Queue: queue, Limit: limit, After: after}
			var err error
			if p.Statuses, err = parseStatuses(statuses, allStatusNames); err != nil {
				return err
			}
			now := time.Now()
			if since != "" {
				if p.CreatedAfter, err = parseTimeFlag("--since", since, now); err != nil {
					return err
				}
			}
			if until != "" {
				if p.CreatedBefore, err = parseTimeFlag("--until", until, now); err != nil {
					return err
				}
			}
			switch {
			case limit < 1 || limit > tasuki.MaxListLimit:
				return fmt.Errorf("--limit %d: give 1 to %d", limit, tasuki.MaxListLimit)
			case after < 0:
				return fmt.Errorf("--after %d: give the id printed for the next page, or 0 for the first", after)
			case !p.CreatedAfter.IsZero() && !p.CreatedBefore.IsZero() && !p.CreatedAfter.Before(p.CreatedBefore):
				return fmt.Errorf("--since %s is not before --until %s", since, until)
			}
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				page, err := adm.List(cmd.Context(), p)
				if err != nil {
					return err
				}
				if asJSON {
					out := listJSON{Jobs: make([]jobJSON, 0, len(page.Jobs)), Next: page.Next}
					for _, j := range page.Jobs {
						out.Jobs = append(out.Jobs, toJobJSON(j))
					}
					return a.printJSON(out)
				}
				if err := a.printJobTable(page.Jobs); err != nil {
					return err
				}
				if page.Next != 0 {
					fmt.Fprintf(a.stderr, "more jobs: add --after %d for the next page\n", page.Next)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&queue, "queue", "", "only jobs of this queue (default: every queue)")
	f.StringSliceVar(&statuses, "status", nil, "only jobs in these statuses: "+orList(allStatusNames)+" (repeat or separate with commas)")
	f.StringVar(&since, "since", "", "only jobs created at or after this time, or this long ago")
	f.StringVar(&until, "until", "", "only jobs created before this time, or this long ago")
	f.IntVar(&limit, "limit", tasuki.DefaultListLimit, "most jobs to print")
	f.Int64Var(&after, "after", 0, "print the page after this id, as printed by the previous page")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table, with the next page's --after as \"next\"")
	return cmd
}

// printJobTable prints jobs as an aligned table, one line each.
func (a *app) printJobTable(jobs []*tasuki.Job[json.RawMessage]) error {
	if len(jobs) == 0 {
		fmt.Fprintln(a.stdout, "no jobs match")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUEUE\tSTATUS\tATTEMPT\tCREATED\tSCHEDULED\tLAST ERROR")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", j.ID, j.Queue, j.Status, j.Attempt, j.MaxAttempts,
			formatTime(&j.CreatedAt), formatTime(&j.ScheduledAt), oneLine(j.LastError(), 60))
	}
	return tw.Flush()
}

func newShowCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show <id>",
		Short: "Show one job: its payload, times and error history",
		Long: `show prints everything stored about one job: queue, status, priority,
attempts, its times, its payload and metadata as indented JSON, and every
failed attempt's error in full (a panic's includes its stack).`,
		Example: `  tasuki show 81234
  tasuki show 81234 --json | jq .payload`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				job, err := adm.Get(cmd.Context(), ids[0])
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(toJobJSON(job))
				}
				return a.printJob(job)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	return cmd
}

// printJob prints one job in full.
func (a *app) printJob(j *tasuki.Job[json.RawMessage]) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%d\n", j.ID)
	fmt.Fprintf(tw, "queue:\t%s\n", j.Queue)
	fmt.Fprintf(tw, "status:\t%s\n", j.Status)
	fmt.Fprintf(tw, "priority:\t%d\n", j.Priority)
	fmt.Fprintf(tw, "attempts:\t%d of %d\n", j.Attempt, j.MaxAttempts)
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(&j.CreatedAt))
	fmt.Fprintf(tw, "scheduled:\t%s\n", formatTime(&j.ScheduledAt))
	fmt.Fprintf(tw, "attempted:\t%s\n", formatTime(j.AttemptedAt))
	fmt.Fprintf(tw, "finished:\t%s\n", formatTime(j.FinishedAt))
	fmt.Fprintf(tw, "metadata:\t%s\n", compactJSON(j.Metadata))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "payload:\n%s\n", indentJSON(j.Payload, "  "))
	if len(j.Errors) == 0 {
		fmt.Fprintln(a.stdout, "errors: none")
		return nil
	}
	fmt.Fprintf(a.stdout, "errors (%d, oldest first):\n", len(j.Errors))
	for _, e := range j.Errors {
		text := strings.ReplaceAll(strings.TrimRight(e.Error, "\n"), "\n", "\n      ")
		fmt.Fprintf(a.stdout, "  attempt %d at %s:\n      %s\n", e.Attempt, formatTime(&e.At), text)
	}
	return nil
}

func indentJSON(raw json.RawMessage, prefix string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, prefix, "  "); err != nil {
		return prefix + string(raw)
	}
	return prefix + b.String()
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
