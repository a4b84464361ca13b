// Command tasuki operates a tasuki queue: it applies the schema, shows and
// fixes jobs and queues, and runs the demo and the benchmark.
//
//	tasuki demo                      # the demo, on a throwaway PostgreSQL cluster
//	tasuki bench                     # measure drain rate, latency and insert speed
//	tasuki migrate up                # apply tasuki's migrations to $DATABASE_URL
//	tasuki stats                     # jobs per queue, kind and status
//	tasuki list --status failed      # find jobs; show, cancel, retry, clean them
//	tasuki processes                 # the running workers, their queues and kinds
//	tasuki pause emails              # stop a queue's workers leasing; resume it
//	tasuki retention emails          # how long finished jobs are kept; set it
//
// Every command reads the database from --database-url or, when the flag
// is not given, from the DATABASE_URL environment variable.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process's exit code.
func run(args []string, stdout, stderr io.Writer) int {
	// Ctrl-C and SIGTERM cancel the command's context, so that every
	// command stops cleanly; see app.releaseSignals for a second Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return newApp(stdout, stderr, stop).execute(ctx, args)
}

// newApp returns the app of one command line, on the real clock.
func newApp(stdout, stderr io.Writer, releaseSignals func()) *app {
	return &app{
		stdout:         stdout,
		stderr:         stderr,
		log:            newLogger(stderr),
		releaseSignals: releaseSignals,
		now:            time.Now,
	}
}

// execute runs the command line args and returns the exit code. An error
// is printed as one line, "tasuki: <error>", so that it reads well in a
// terminal and in a log collector alike.
func (a *app) execute(ctx context.Context, args []string) int {
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(a.stderr, errorLine(err))
		return 1
	}
	return 0
}

// app is the state every subcommand shares: the global flags, where output
// goes, and the logger. A subcommand lives in its own file as a
// constructor func(*app) *cobra.Command, and is registered with one entry
// in newRootCmd's AddCommand.
type app struct {
	// databaseURL is --database-url as given; use url(), which falls back
	// to $DATABASE_URL.
	databaseURL string
	// stdout receives a command's results; stderr its logs and errors.
	stdout, stderr io.Writer
	// log writes text logs to stderr.
	log *slog.Logger
	// releaseSignals restores the default handling of SIGINT and SIGTERM.
	// A long-running command calls it once it has begun to shut down, so
	// that a second Ctrl-C ends the process at once instead of waiting.
	releaseSignals func()
	// now is the clock that durations such as list's --since 1h count
	// back from; tests stop it.
	now func() time.Time
}

// url is the database URL: --database-url if given, else $DATABASE_URL,
// else "". The environment is read here rather than as the flag's default
// so that --help never prints a password.
func (a *app) url() string {
	if a.databaseURL != "" {
		return a.databaseURL
	}
	return os.Getenv("DATABASE_URL")
}

// urlSource names where url() came from, for errors that say where to fix
// it.
func (a *app) urlSource() string {
	if a.databaseURL != "" {
		return "--database-url"
	}
	return "DATABASE_URL"
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "tasuki",
		Short: "Operate a tasuki job queue",
		Long: `tasuki is a job queue on PostgreSQL. This command applies or rolls back
its schema (migrate); shows and fixes jobs and queues (stats, list, show,
cancel, retry, clean, pause, resume, retention); lists the running worker
processes (processes); and shows it at work (demo) and measures it (bench).

The database is given by --database-url or, when the flag is absent, by the
DATABASE_URL environment variable, as a PostgreSQL URL or keyword/value
string (postgres://user:password@host:5432/dbname). Passwords are never
printed. The demo and the benchmark can run without one, on a throwaway
cluster.`,
		Example: `  tasuki demo --duration 30s
  DATABASE_URL=postgres://app@localhost/app tasuki migrate up
  tasuki migrate status --database-url postgres://app@localhost/app`,
		// Errors are printed once, by run, as one line; a usage dump would
		// bury them.
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	root.PersistentFlags().StringVar(&a.databaseURL, "database-url", "",
		"PostgreSQL connection URL (default: $DATABASE_URL)")
	root.SetFlagErrorFunc(flagError)
	root.Version = versionText()
	root.SetVersionTemplate("{{.Version}}")
	root.Flags().Bool("version", false, "print tasuki's version, its schema version and its Go version")
	root.AddCommand(
		newDemoCmd(a),
		newMigrateCmd(a),
		newBenchCmd(a),
		newStatsCmd(a),
		newListCmd(a),
		newShowCmd(a),
		newCancelCmd(a),
		newRetryCmd(a),
		newCleanCmd(a),
		newPauseCmd(a),
		newResumeCmd(a),
		newRetentionCmd(a),
		newProcessesCmd(a),
		newPeriodicCmd(a),
		newVersionCmd(a),
	)
	return root
}

// groupRunE runs a command that only groups subcommands: without
// arguments it shows the help; with one it reports an unknown subcommand.
// Cobra itself would show the help and succeed for "tasuki migrate nope".
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return fmt.Errorf("%s; see '%s --help'", msg, cmd.CommandPath())
}

// argsAnnotation, in a command's Annotations, says what its arguments are,
// for the errors about them: argsJobIDs or argsQueues.
const argsAnnotation = "tasuki-args"

const (
	argsJobIDs = "job ids"
	argsQueues = "queue names"
)

// flagError rewrites the flag parser's errors that a user meets without
// having meant a flag: an argument that starts with '-', such as a negative
// job id or a queue named "-x", which the parser takes for a flag; and a
// value that is not a number for a numeric flag, which would otherwise
// show Go's parse error.
func flagError(cmd *cobra.Command, err error) error {
	var notExist *pflag.NotExistError
	if errors.As(err, &notExist) && notExist.GetSpecifiedShortnames() != "" {
		token := "-" + notExist.GetSpecifiedShortnames()
		switch kind := cmd.Annotations[argsAnnotation]; {
		case kind == argsJobIDs && negativeNumber.MatchString(token):
			_, err := parseIDs([]string{token})
			return err
		case kind == argsQueues:
			return fmt.Errorf("%w; a queue name that starts with '-' goes after \"--\": %s -- %s", err, cmd.CommandPath(), token)
		}
	}
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		if want, ok := numberTypes[invalid.GetFlag().Value.Type()]; ok {
			problem := "give " + want
			if errors.Is(err, strconv.ErrRange) {
				problem = "the number is too large"
			}
			return fmt.Errorf("--%s %q: %s (see '%s --help')", invalid.GetFlag().Name, invalid.GetValue(), problem, cmd.CommandPath())
		}
	}
	return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
}

// negativeNumber matches an argument the flag parser mistakes for a flag
// but that a user meant as a number: -5, -1.5.
var negativeNumber = regexp.MustCompile(`^-[0-9.]`)

// numberTypes says what each numeric flag type takes, by pflag's type name.
var numberTypes = map[string]string{
	"int": "a whole number", "int32": "a whole number", "int64": "a whole number",
	"uint": "a whole number 0 or more", "uint32": "a whole number 0 or more", "uint64": "a whole number 0 or more",
	"float64": "a number", "float32": "a number",
}

// errorLine formats err as the one line run prints, starting "tasuki: ".
// The library's errors start with "tasuki: " too, and are wrapped by
// other errors that do: the prefix is kept once, at the start, rather than
// wherever a wrapped error began. Multi-line texts, such as pgx's report of
// every address it tried, are joined with "; ", each distinct line once:
// pgx repeats an address it tried with and without TLS.
func errorLine(err error) string {
	var b strings.Builder
	seen := make(map[string]bool)
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		for strings.HasPrefix(line, "tasuki: ") {
			line = strings.TrimPrefix(line, "tasuki: ")
		}
		if line == "" || seen[line] {
			continue
		}
		seen[line] = true
		switch {
		case b.Len() == 0:
		case strings.HasSuffix(b.String(), ":"):
			b.WriteString(" ")
		default:
			b.WriteString("; ")
		}
		b.WriteString(line)
	}
	return "tasuki: " + innerPrefix.ReplaceAllString(b.String(), "$1")
}

// innerPrefix matches a "tasuki: " that starts a wrapped error's text, after
// the ": " or "; " that joined it, however many times it is repeated.
var innerPrefix = regexp.MustCompile(`([:;] )(?:tasuki: )+`)

// newLogger returns the text logger every command uses. Times are shown as
// a wall clock with milliseconds: the demo's logs are read by people
// watching jobs start and end, not by machines.
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, attr slog.Attr) slog.Attr {
			if attr.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, attr.Value.Time().Format("15:04:05.000"))
			}
			return attr
		},
	}))
}
