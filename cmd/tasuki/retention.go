package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasukiq/tasuki/tasuki"
)

// retentionJSON is the output of retention --json. The retention fields
// are named as in stats --json, so that one jq filter reads both.
type retentionJSON struct {
	Queue string `json:"queue"`
	// Jobs is how many jobs the queue has, in any status.
	Jobs int64 `json:"jobs"`
	// Changed is whether the retention in effect changed; always false
	// when no flag is given.
	Changed bool `json:"changed"`
	retentionSecondsJSON
}

// retentionSecondsJSON is a retention in effect, in seconds, -1 for
// forever; stats --json has it too.
type retentionSecondsJSON struct {
	RetentionCompletedSeconds float64 `json:"retention_completed_seconds"`
	RetentionCanceledSeconds  float64 `json:"retention_canceled_seconds"`
	RetentionFailedSeconds    float64 `json:"retention_failed_seconds"`
}

func toRetentionSecondsJSON(r tasuki.Retention) retentionSecondsJSON {
	seconds := func(d time.Duration) float64 {
		if d == tasuki.KeepForever {
			return -1
		}
		return d.Seconds()
	}
	return retentionSecondsJSON{
		RetentionCompletedSeconds: seconds(r.Completed),
		RetentionCanceledSeconds:  seconds(r.Canceled),
		RetentionFailedSeconds:    seconds(r.Failed),
	}
}

// retentionStatus is one status a retention is set for: its flag and its
// field of tasuki.Retention.
type retentionStatus struct {
	flag  string
	def   time.Duration
	field func(*tasuki.Retention) *time.Duration
}

var retentionStatuses = []retentionStatus{
	{"completed", tasuki.DefaultCompletedRetention, func(r *tasuki.Retention) *time.Duration { return &r.Completed }},
	{"canceled", tasuki.DefaultCanceledRetention, func(r *tasuki.Retention) *time.Duration { return &r.Canceled }},
	{"failed", tasuki.DefaultFailedRetention, func(r *tasuki.Retention) *time.Duration { return &r.Failed }},
}

// parseRetention reads the value of --completed, --canceled or --failed:
// a duration, "forever" (tasuki.KeepForever) or "default" (0).
func parseRetention(st retentionStatus, value string) (time.Duration, error) {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "forever":
		return tasuki.KeepForever, nil
	case "default":
		return 0, nil
	}
	d, err := parseAge(strings.TrimSpace(value))
	switch {
	case errors.Is(err, errDurationTooLong):
		return 0, fmt.Errorf(`--%s %q: the longest retention is %dd; "forever" keeps the jobs`, st.flag, value, maxDays)
	case err != nil || d < 0:
		return 0, fmt.Errorf(`--%s %q: give a duration (48h, 90m, 7d), "forever" or "default"`, st.flag, value)
	case d < time.Microsecond:
		return 0, fmt.Errorf(`--%s %q: a retention is at least 1µs; "default" is tasuki's default (%s)`, st.flag, value, formatRetention(st.def))
	}
	return d, nil
}

// formatRetention shows a retention as it can be given back: forever,
// 36h, 1h30m, and whole days from two days on (7d, 2d12h).
func formatRetention(d time.Duration) string {
	if d == tasuki.KeepForever {
		return "forever"
	}
	const day = 24 * time.Hour
	days := ""
	if d >= 2*day {
		days = fmt.Sprintf("%dd", d/day)
		if d %= day; d == 0 {
			return days
		}
	}
	// time.Duration's String, without its zero minutes and seconds:
	// "36h0m0s" is shown as 36h, "1h30m0s" as 1h30m.
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return days + s
}

func newRetentionCmd(a *app) *cobra.Command {
	var asJSON bool
	values := make([]string, len(retentionStatuses))
	cmd := &cobra.Command{
		Use:   "retention <queue>",
		Short: "Show or set how long a queue's finished jobs are kept",
		Long: `retention shows how long a queue's finished jobs are kept, by status,
before the retention cleaner of the worker processes deletes them; with
--completed, --canceled or --failed it sets that for every worker process at
once. The cleaner applies a new setting at its next round.

A value is a duration (48h, 90m, 7d, 1d12h; days are 24 hours), "forever"
to keep such jobs, or "default" for tasuki's default: 24h for completed
jobs, 7d for canceled and failed ones.

A status whose flag is not given keeps the value in effect. A value in
effect equal to tasuki's default is kept as the default, and shown as
"(the default)": a queue then follows tasuki's default should a later
version change it. (Whether such a value was set explicitly cannot be
told; to keep one fixed across such a change, give it again with every
change.) A queue needs no jobs to have a setting; for a queue without jobs
retention says so, as the name may be mistyped. It reads every job once,
as 'tasuki stats' does.`,
		Example: `  tasuki retention emails
  tasuki retention emails --completed 48h
  tasuki retention audit --completed forever --canceled forever --failed forever
  tasuki retention emails --failed default --json | jq .retention_failed_seconds`,
		Args:        retentionArgs,
		Annotations: map[string]string{argsAnnotation: argsQueues},
		RunE: func(cmd *cobra.Command, args []string) error {
			queue := args[0]
			if err := tasuki.ValidateQueue("queue", queue); err != nil {
				return err
			}
			// Every value is checked before the database is asked for.
			given := make([]bool, len(retentionStatuses))
			parsed := make([]time.Duration, len(retentionStatuses))
			set := false
			for i, st := range retentionStatuses {
				if !cmd.Flags().Changed(st.flag) {
					continue
				}
				d, err := parseRetention(st, values[i])
				if err != nil {
					return err
				}
				given[i], parsed[i], set = true, d, true
			}
			return a.withAdmin(cmd.Context(), func(adm *tasuki.Admin) error {
				ctx := cmd.Context()
				stats, err := adm.Stats(ctx)
				if err != nil {
					return err
				}
				// A queue Stats does not list has neither jobs nor a
				// setting: the defaults are in effect.
				current := tasuki.QueueStats{Queue: queue, Retention: defaultRetention()}
				for _, s := range stats {
					if s.Queue == queue {
						current = s
					}
				}
				now := current.Retention
				if set {
					// SetRetention replaces the whole setting: a status not
					// given keeps its value in effect, one equal to the
					// default as the default (0).
					var r tasuki.Retention
					for i, st := range retentionStatuses {
						d := *st.field(&current.Retention)
						if given[i] {
							d = parsed[i]
						}
						if d == st.def {
							d = 0
						}
						*st.field(&r) = d
						if d == 0 {
							d = st.def
						}
						*st.field(&now) = d
					}
					if err := adm.SetRetention(ctx, queue, r); err != nil {
						return err
					}
				}
				changed := now != current.Retention
				if asJSON {
					return a.printJSON(retentionJSON{
						Queue: queue, Jobs: current.Total(), Changed: changed,
						retentionSecondsJSON: toRetentionSecondsJSON(now),
					})
				}
				switch {
				case !set:
					fmt.Fprintf(a.stdout, "queue %s keeps its finished jobs:\n", queue)
				case changed:
					fmt.Fprintf(a.stdout, "queue %s now keeps its finished jobs:\n", queue)
				default:
					fmt.Fprintf(a.stdout, "queue %s already kept its finished jobs so; nothing changed:\n", queue)
				}
				for _, st := range retentionStatuses {
					d := *st.field(&now)
					note := ""
					if d == st.def {
						note = " (the default)"
					}
					fmt.Fprintf(a.stdout, "  %-9s  %s%s\n", st.flag, formatRetention(d), note)
				}
				switch {
				case current.Total() > 0:
				case set:
					fmt.Fprintf(a.stdout, "queue %s has no jobs yet: its jobs will be kept so (tasuki stats lists the queues)\n", queue)
				default:
					fmt.Fprintf(a.stdout, "queue %s has no jobs yet (tasuki stats lists the queues)\n", queue)
				}
				return nil
			})
		},
	}
	for i, st := range retentionStatuses {
		cmd.Flags().StringVar(&values[i], st.flag, "",
			fmt.Sprintf(`how long %s jobs are kept: a duration (48h, 7d), "forever" or "default" (%s); not given keeps the value in effect`,
				st.flag, formatRetention(st.def)))
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text: the queue, its jobs, whether the retention changed, and each retention in seconds (-1 for forever)")
	return cmd
}

// retentionArgs takes exactly one queue, and says how to give it.
func retentionArgs(cmd *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("give the queue: %s <queue> (tasuki stats lists the queues)", cmd.CommandPath())
	}
	quoted := make([]string, len(args))
	for i, q := range args {
		quoted[i] = fmt.Sprintf("%q", q)
	}
	return fmt.Errorf("give one queue, not %d (%s): %s <queue>", len(args), strings.Join(quoted, ", "), cmd.CommandPath())
}

func defaultRetention() tasuki.Retention {
	return tasuki.Retention{
		Completed: tasuki.DefaultCompletedRetention,
		Canceled:  tasuki.DefaultCanceledRetention,
		Failed:    tasuki.DefaultFailedRetention,
	}
}
