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
	// Since and Until are the times this page's --since and --until
	// stood for; null when not given. The next page needs the same times:
	// a duration such as --since 1h, given again, would count from a later
	// now and miss jobs.
	Since *time.Time `json:"since"`
	Until *time.Time `json:"until"`
}

func newListCmd(a *app) *cobra.Command {
	var (
		queue, kind  string
		statuses     []string
		since, until string
		limit        int
		after        int64
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first, a page at a time",
		Long: `list prints jobs newest first (by id), filtered by queue, kind, status
and creation time, --limit per page (1 to 10000). When more jobs match, it says
on stderr what to add for the next page: --after, and any --since or
--until given as a duration, as the time it stood for on this page. Every
job appears on exactly one page, even when many were created at the same
moment.

--since and --until take a time (2024-05-01, "2024-05-01 14:00" in local
time, 2024-05-01T14:00:00Z) or a duration before now (90m, 24h, 7d); --since
is inclusive, --until exclusive. Use 'tasuki show <id>' for a job's payload
and full error history.`,
		Example: `  tasuki list --queue emails --status failed
  tasuki list --kind send_email --status pending
  tasuki list --status pending,running --since 1h --limit 20
  tasuki list --queue emails --after 81234
  tasuki list --status failed --json | jq '.jobs[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := tasuki.ListParams{Queue: queue, Kind: kind, Limit: limit, After: after}
			if err := checkKindFlag(kind); err != nil {
				return err
			}
			var err error
			if p.Statuses, err = parseStatuses(statuses, allStatusNames); err != nil {
				return err
			}
			// The database keeps microseconds: a time printed for the next
			// page is then the very time this page used.
			now := a.now().Truncate(time.Microsecond)
			// relative holds the --since and --until given as durations;
			// they count back from now, and so differ from page to page.
			var relative []timeFlag
			if since != "" {
				if p.CreatedAfter, err = parseTimeFlag("--since", since, now); err != nil {
					return err
				}
				if isDuration(since) {
					relative = append(relative, timeFlag{"--since", since, p.CreatedAfter})
				}
			}
			if until != "" {
				if p.CreatedBefore, err = parseTimeFlag("--until", until, now); err != nil {
					return err
				}
				if isDuration(until) {
					relative = append(relative, timeFlag{"--until", until, p.CreatedBefore})
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
			if after != 0 {
				for _, f := range relative {
					fmt.Fprintf(a.stderr, "note: %s %s is counted from now, not from when the previous page was listed; "+
						"to miss no job, give the %s that page printed\n", f.name, f.value, f.name)
				}
			}
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				page, err := adm.List(cmd.Context(), p)
				if err != nil {
					return err
				}
				if asJSON {
					out := listJSON{Jobs: make([]jobJSON, 0, len(page.Jobs)), Next: page.Next}
					if !p.CreatedAfter.IsZero() {
						out.Since = &p.CreatedAfter
					}
					if !p.CreatedBefore.IsZero() {
						out.Until = &p.CreatedBefore
					}
					for _, j := range page.Jobs {
						out.Jobs = append(out.Jobs, toJobJSON(j))
					}
					return a.printJSON(out)
				}
				if err := a.printJobTable(page.Jobs); err != nil {
					return err
				}
				if page.Next != 0 {
					fmt.Fprintln(a.stderr, nextPageHint(page.Next, relative))
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&queue, "queue", "", "only jobs of this queue (default: every queue)")
	f.StringVar(&kind, "kind", "", "only jobs of this kind (default: every kind)")
	f.StringSliceVar(&statuses, "status", nil, "only jobs in these statuses: "+orList(allStatusNames)+" (repeat or separate with commas)")
	f.StringVar(&since, "since", "", "only jobs created at or after this time, or this long ago")
	f.StringVar(&until, "until", "", "only jobs created before this time, or this long ago")
	f.IntVar(&limit, "limit", tasuki.DefaultListLimit, "most jobs to print")
	f.Int64Var(&after, "after", 0, "print the page after this id, as printed by the previous page")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table, with the next page's --after as \"next\" and its --since and --until as \"since\" and \"until\"")
	return cmd
}

// timeFlag is a --since or --until given as a duration before now, and the
// time it stood for.
type timeFlag struct {
	name, value string
	at          time.Time
}

// isDuration reports whether a --since or --until value is a duration
// before now rather than a time.
func isDuration(s string) bool {
	d, err := parseAge(s)
	return err == nil && d >= 0
}

// nextPageHint says what to add to the command line for the next page:
// --after, and a duration given for --since or --until as the time it
// stood for on this page. Added after the flags given, they override them.
func nextPageHint(next int64, relative []timeFlag) string {
	add := fmt.Sprintf("--after %d", next)
	if len(relative) == 0 {
		return "more jobs: add " + add + " for the next page"
	}
	var given []string
	for _, f := range relative {
		add += fmt.Sprintf(" %s %s", f.name, f.at.UTC().Format(time.RFC3339Nano))
		given = append(given, f.name+" "+f.value)
	}
	return fmt.Sprintf("more jobs: add %s for the next page (this page's %s, fixed)", add, strings.Join(given, " and "))
}

// printJobTable prints jobs as an aligned table, one line each.
func (a *app) printJobTable(jobs []*tasuki.Job[json.RawMessage]) error {
	if len(jobs) == 0 {
		fmt.Fprintln(a.stdout, "no jobs match")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUEUE\tKIND\tSTATUS\tATTEMPT\tSNOOZED\tUNIQUE\tCREATED\tSCHEDULED\tLAST ERROR")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.Queue, j.Kind, j.Status, j.Attempt, j.MaxAttempts,
			j.Snoozes, shortKey(j.UniqueKey), formatTime(&j.CreatedAt), formatTime(&j.ScheduledAt), oneLine(j.LastError(), 60))
	}
	return tw.Flush()
}

func newShowCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show <id>",
		Short: "Show one job: its payload, times and error history",
		Long: `show prints everything stored about one job: queue, kind, status,
priority, attempts, its times, its payload and metadata as indented JSON, and every
failed attempt's error in full (a panic's includes its stack).`,
		Example: `  tasuki show 81234
  tasuki show 81234 --json | jq .payload`,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{argsAnnotation: argsJobIDs},
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
	fmt.Fprintf(tw, "kind:\t%s\n", j.Kind)
	fmt.Fprintf(tw, "status:\t%s\n", j.Status)
	fmt.Fprintf(tw, "priority:\t%d\n", j.Priority)
	fmt.Fprintf(tw, "attempts:\t%d of %d\n", j.Attempt, j.MaxAttempts)
	fmt.Fprintf(tw, "snoozed:\t%d times\n", j.Snoozes)
	if j.UniqueKey != nil {
		fmt.Fprintf(tw, "unique key:\t%x\n", j.UniqueKey)
	}
	if j.Timeout > 0 {
		fmt.Fprintf(tw, "timeout:\t%s\n", j.Timeout)
	}
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

// shortKey is the start of a unique key, enough to tell keys apart in a
// table; "-" for none.
func shortKey(k []byte) string {
	if k == nil {
		return "-"
	}
	return fmt.Sprintf("%x", k[:min(len(k), 6)])
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
