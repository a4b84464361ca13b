package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// fuzzParseConfig is pgx.ParseConfig with a panic turned into an error.
func fuzzParseConfig(connString string) (err error) {
	if p := fuzzCatch(func() { _, err = pgx.ParseConfig(connString) }); p != nil {
		return fmt.Errorf("pgx.ParseConfig panicked: %v", p)
	}
	return err
}

// fuzzCatch runs f and returns what it panicked with, or nil.
func fuzzCatch(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// worker.New accepts exactly the valid configurations, fills in the
// documented defaults, and rejects the others with an *InvalidOptionError
// naming an invalid field, never showing the ListenURL's password. No
// database: the pool never connects. `go test -fuzz FuzzConfig ./worker/`
// explores; `go test` runs the seed corpus in testdata/fuzz/FuzzConfig.
func FuzzConfig(f *testing.F) {
	f.Add("", 0, int64(0), int64(0), int64(0), int64(0), "", false)
	f.Add("q", 100000, int64(time.Second), int64(time.Second-1), int64(10*time.Millisecond), int64(-1), "", true)
	f.Add(strings.Repeat("x", 129), -1, int64(-1), int64(-1), int64(-1), int64(-2), "", false)
	f.Add("q", 1, int64(0), int64(10*time.Second), int64(0), int64(0), "postgres://u:hunter2@h:5432/d", false)
	f.Add("q", 1, int64(0), int64(0), int64(0), int64(0), "postgres://u:hunter2@h:x/d", false)
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(f, err)
	f.Cleanup(pool.Close)
	handler := worker.HandlerFunc[struct{}](func(context.Context, *tasuki.Job[struct{}]) error { return nil })

	f.Fuzz(func(t *testing.T, queue string, concurrency int, lease, heartbeat, poll, shutdown int64, listenURL string, disableListen bool) {
		cfg := worker.Config{
			Queue: queue, Concurrency: concurrency, LeaseDuration: time.Duration(lease),
			HeartbeatInterval: time.Duration(heartbeat), PollInterval: time.Duration(poll),
			ShutdownTimeout: time.Duration(shutdown), ListenURL: listenURL, DisableListen: disableListen,
		}
		// The documented rules.
		invalid := map[string]bool{}
		if n := utf8.RuneCountInString(queue); queue != "" && (n > tasuki.MaxQueueLength || !utf8.ValidString(queue) || strings.ContainsRune(queue, 0)) {
			invalid["Config.Queue"] = true
		}
		if concurrency < 0 || concurrency > 100_000 {
			invalid["Config.Concurrency"] = true
		}
		wantLease := time.Duration(lease)
		switch {
		case lease == 0:
			wantLease = worker.DefaultLeaseDuration
		case wantLease < time.Second:
			invalid["Config.LeaseDuration"] = true
		}
		wantHeartbeat := time.Duration(heartbeat)
		switch {
		case heartbeat == 0:
			wantHeartbeat = wantLease / 3
		case wantHeartbeat < worker.MinHeartbeatInterval || wantHeartbeat > wantLease/2:
			if !invalid["Config.LeaseDuration"] {
				invalid["Config.HeartbeatInterval"] = true
			}
		}
		wantPoll := time.Duration(poll)
		switch {
		case poll == 0:
			wantPoll = worker.DefaultPollInterval
		case wantPoll < 10*time.Millisecond:
			invalid["Config.PollInterval"] = true
		}
		wantShutdown := time.Duration(shutdown)
		switch {
		case shutdown == 0:
			wantShutdown = worker.DefaultShutdownTimeout
		case shutdown == -1: // cancel at once; Config() keeps -1
		case shutdown < -1:
			invalid["Config.ShutdownTimeout"] = true
		}
		if listenURL != "" {
			if err := fuzzParseConfig(listenURL); err != nil || disableListen {
				invalid["Config.ListenURL"] = true
			}
		}

		var w *worker.Worker
		var err error
		if p := fuzzCatch(func() { w, err = worker.New(pool, cfg, worker.Handle(handler).With(worker.KindConfig{Kind: "noop"})) }); p != nil {
			t.Fatalf("worker.New panicked on ListenURL %q: %v", listenURL, p)
		}
		if len(invalid) == 0 {
			require.NoError(t, err)
			got := w.Config()
			wantQueue := queue
			if wantQueue == "" {
				wantQueue = tasuki.DefaultQueue
			}
			assert.Equal(t, wantQueue, got.Queue)
			wantConcurrency := concurrency
			if wantConcurrency == 0 {
				wantConcurrency = worker.DefaultConcurrency
			}
			assert.Equal(t, wantConcurrency, got.Concurrency)
			assert.Equal(t, wantLease, got.LeaseDuration)
			assert.Equal(t, wantHeartbeat, got.HeartbeatInterval)
			assert.LessOrEqual(t, got.HeartbeatInterval, got.LeaseDuration/2)
			assert.GreaterOrEqual(t, got.HeartbeatInterval, worker.MinHeartbeatInterval)
			assert.Equal(t, wantPoll, got.PollInterval)
			assert.Equal(t, wantShutdown, got.ShutdownTimeout)
			return
		}
		var opt *tasuki.InvalidOptionError
		if !errors.As(err, &opt) {
			t.Fatalf("want *InvalidOptionError for %v, got %v", invalid, err)
		}
		assert.True(t, invalid[opt.Option], "names an invalid field: %s not in %v", opt.Option, invalid)
		if opt.Option == "Config.ListenURL" {
			assert.NotEqual(t, listenURL, fmt.Sprint(opt.Value), "the connection string is not shown")
			if u, perr := url.Parse(listenURL); perr == nil && u.User != nil {
				pw, _ := u.User.Password()
				rest := strings.Replace(listenURL, pw, "", 1)
				if len(pw) >= 4 && !strings.Contains(rest, pw) {
					assert.NotContains(t, err.Error(), pw, "the error never shows the password")
				}
			}
		}
	})
}
