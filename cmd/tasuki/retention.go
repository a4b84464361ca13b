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
	flag   string
	def    time.Duration
	field  func(*tasuki.Retention) *time.Duration
	change func(*tasuki.RetentionChange) **time.Duration
}

var retentionStatuses = []retentionStatus{
	{"completed", tasuki.DefaultCompletedRetention,
		func(r *tasuki.Retention) *time.Duration { return &r.Completed },
		func(c *tasuki.RetentionChange) **time.Duration { return &c.Completed }},
	{"canceled", tasuki.DefaultCanceledRetention,
		func(r *tasuki.Retention) *time.Duration { return &r.Canceled },
		func(c *tasuki.RetentionChange) **time.Duration { return &c.Canceled }},
	{"failed", tasuki.DefaultFailedRetention,
		func(r *tasuki.Retention) *time.Duration { return &r.Failed },
		func(c *tasuki.RetentionChange) **time.Duration { return &c.Failed }},
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
	var asJSON, installation bool
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

A status whose flag is not given keeps its setting; "default" removes a
queue's setting for that status, which then follows the default of every
queue, set with --installation (itself "default" unless set: tasuki's
defaults above). A queue needs no jobs to have a setting; for a queue
without jobs retention says so, as the name may be mistyped. For a queue it
reads every job once, as 'tasuki stats' does.`,
		Example: `  tasuki retention emails
  tasuki retention emails --completed 48h
  tasuki retention audit --completed forever --canceled forever --failed forever
  tasuki retention emails --failed default --json | jq .retention_failed_seconds
  tasuki retention --installation --completed forever   # keep every queue's jobs unless it says otherwise`,
		Args:        retentionArgs,
		Annotations: map[string]string{argsAnnotation: argsQueues},
		RunE: func(cmd *cobra.Command, args []string) error {
			var queue string
			if !installation {
				queue = args[0]
				if err := tasuki.ValidateQueue("queue", queue); err != nil {
					return err
				}
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
				// What is stored (0: not set) and what applies where
				// nothing is: the installation's setting, else tasuki's.
				inherited := defaultRetention()
				installationOwn, err := adm.DefaultRetention(ctx)
				if err != nil {
					return err
				}
				own := installationOwn
				var jobs int64
				if !installation {
					inherited = effectiveRetention(installationOwn, inherited)
					if own, err = adm.QueueRetention(ctx, queue); err != nil {
						return err
					}
					stats, err := adm.Stats(ctx)
					if err != nil {
						return err
					}
					for _, s := range stats {
						if s.Queue == queue {
							jobs = s.Total()
						}
					}
				}
				// Only the statuses given change, in one statement: two
				// runs at once for different statuses both take effect.
				stored, changed := own, false
				if set {
					var change tasuki.RetentionChange
					for i, st := range retentionStatuses {
						if given[i] {
							*st.change(&change) = &parsed[i]
						}
					}
					if installation {
						stored, changed, err = adm.ChangeDefaultRetention(ctx, change)
						installationOwn = stored
					} else {
						stored, changed, err = adm.ChangeRetention(ctx, queue, change)
					}
					if err != nil {
						return err
					}
				}
				now := effectiveRetention(stored, inherited)
				if asJSON {
					return a.printJSON(retentionJSON{
						Queue: queue, Jobs: jobs, Changed: changed,
						retentionSecondsJSON: toRetentionSecondsJSON(now),
					})
				}
				subject, keeps, its := "queue "+queue, "keeps", "its"
				if installation {
					subject, keeps, its = "queues without a setting of their own", "keep", "their"
				}
				switch {
				case !set:
					fmt.Fprintf(a.stdout, "%s %s %s finished jobs:\n", subject, keeps, its)
				case changed:
					fmt.Fprintf(a.stdout, "%s now %s %s finished jobs:\n", subject, keeps, its)
				default:
					fmt.Fprintf(a.stdout, "%s already kept %s finished jobs so; nothing changed:\n", subject, its)
				}
				for _, st := range retentionStatuses {
					note := ""
					if *st.field(&stored) == 0 {
						note = " (the default)"
						if !installation && *st.field(&installationOwn) != 0 {
							note = " (the default of every queue: tasuki retention --installation)"
						}
					}
					fmt.Fprintf(a.stdout, "  %-9s  %s%s\n", st.flag, formatRetention(*st.field(&now)), note)
				}
				switch {
				case installation || jobs > 0:
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
	cmd.Flags().BoolVar(&installation, "installation", false,
		"show or set the default of every queue without a setting of its own, instead of one queue's")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text: the queue, its jobs, whether the retention changed, and each retention in seconds (-1 for forever)")
	return cmd
}

// retentionArgs takes exactly one queue, or none with --installation, and
// says how to give it.
func retentionArgs(cmd *cobra.Command, args []string) error {
	if installation, _ := cmd.Flags().GetBool("installation"); installation {
		if len(args) > 0 {
			return fmt.Errorf("give a queue or --installation, not both: %s --installation [--completed D] …", cmd.CommandPath())
		}
		return nil
	}
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

// effectiveRetention is stored with inherited in place of the fields not
// set (0).
func effectiveRetention(stored, inherited tasuki.Retention) tasuki.Retention {
	for _, st := range retentionStatuses {
		if *st.field(&stored) == 0 {
			*st.field(&stored) = *st.field(&inherited)
		}
	}
	return stored
}

func defaultRetention() tasuki.Retention {
	return tasuki.Retention{
		Completed: tasuki.DefaultCompletedRetention,
		Canceled:  tasuki.DefaultCanceledRetention,
		Failed:    tasuki.DefaultFailedRetention,
	}
}
