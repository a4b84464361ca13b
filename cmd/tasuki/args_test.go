package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestJobIDArguments gives show, cancel and retry what is not a job id,
// negative numbers above all, which the flag parser would otherwise take
// for flags. Each is refused in one line that names the bad argument,
// before any connection is tried.
func TestJobIDArguments(t *testing.T) {
	t.Parallel()
	for _, command := range []string{"show", "cancel", "retry"} {
		for _, args := range [][]string{
			{"-5"}, {"-12", "--json"}, {"--", "-5"}, {"0"}, {"abc"}, {"1.5"}, {"-1.5"}, {"0x10"}, {""},
		} {
			bad := args[0]
			if bad == "--" {
				bad = args[1]
			}
			t.Run(command+"_"+strings.Join(args, "_"), func(t *testing.T) {
				t.Parallel()
				line := requireOneLineError(t, runCLI(t, "", append([]string{command}, args...)...))
				assert.Equal(t, fmt.Sprintf("tasuki: %q is not a job id: job ids are positive integers, as 'tasuki list' prints them", bad), line)
			})
		}
	}
	// Among valid ids too, and whatever the flags around it.
	for _, tc := range []struct {
		args []string
		bad  string
	}{
		{[]string{"cancel", "5", "-6"}, "-6"},
		{[]string{"retry", "7", "-8", "9"}, "-8"},
		{[]string{"show", "--json", "-3"}, "-3"},
		{[]string{"cancel", "5", "x", "-6"}, "-6"}, // the flag parser goes first
		{[]string{"cancel", "5", "x", "6"}, "x"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, "", tc.args...))
			assert.Contains(t, line, fmt.Sprintf("tasuki: %q is not a job id: ", tc.bad))
		})
	}
	line := requireOneLineError(t, runCLI(t, "", "show", "99999999999999999999"))
	assert.Equal(t, `tasuki: "99999999999999999999" is not a job id: job ids are at most 9223372036854775807`, line)
}

// TestNumberFlags gives numeric flags what is not a number: the error
// names the flag, the value and what it takes, without Go's strconv text.
func TestNumberFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--limit", "abc"}, `tasuki: --limit "abc": give a whole number (see 'tasuki list --help')`},
		{[]string{"list", "--after=1.5"}, `tasuki: --after "1.5": give a whole number (see 'tasuki list --help')`},
		{[]string{"list", "--after", "99999999999999999999"}, `tasuki: --after "99999999999999999999": the number is too large (see 'tasuki list --help')`},
		{[]string{"clean", "--older-than", "1h", "--batch-size", "1e3"}, `tasuki: --batch-size "1e3": give a whole number (see 'tasuki clean --help')`},
		{[]string{"migrate", "down", "--to", "x"}, `tasuki: --to "x": give a whole number (see 'tasuki migrate down --help')`},
		{[]string{"list", "-5"}, `tasuki: unknown shorthand flag: '5' in -5 (see 'tasuki list --help')`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			line := requireOneLineError(t, runCLI(t, "", tc.args...))
			assert.Equal(t, tc.want, line)
			assert.NotContains(t, line, "strconv")
		})
	}
}

// TestQueueArgumentsStartingWithDash: a queue name is any text, so one
// that starts with '-' must go after "--", and the error says so.
func TestQueueArgumentsStartingWithDash(t *testing.T) {
	t.Parallel()
	for _, command := range []string{"pause", "resume", "retention"} {
		line := requireOneLineError(t, runCLI(t, "", command, "-emails"))
		assert.Equal(t, fmt.Sprintf(`tasuki: unknown shorthand flag: 'e' in -emails; a queue name that starts with '-' goes after "--": tasuki %s -- -emails`, command), line)
	}
}
