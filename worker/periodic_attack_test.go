package worker_test

import (
	"context"
	"encoding/json"
	"os"
	osexec "os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// patk is the payload of the periodic attack tests.
type patk struct {
	N int `json:"n"`
}

func (patk) Kind() string { return "patk" }

// patkTeam is a payload type whose kind declares default metadata.
type patkTeam struct{}

func (patkTeam) Kind() string { return "patk_team" }
func (patkTeam) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Metadata: map[string]any{"team": "finance"}}
}

// patkTicks returns, for the jobs of kind patk of the periodic schedule
// name, their count by tick.
func patkTicks(t *testing.T, pool *pgxpool.Pool, name string) map[time.Time]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT (metadata->>'periodic_tick')::timestamptz, count(*) FROM tasuki_job
		WHERE kind = 'patk' AND metadata->>'periodic' = $1 AND metadata ? 'periodic_tick' GROUP BY 1`, name)
	require.NoError(t, err)
	defer rows.Close()
	out := map[time.Time]int{}
	for rows.Next() {
		var at time.Time
		var n int
		require.NoError(t, rows.Scan(&at, &n))
		out[at.UTC()] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// Guards against this: a payload func that panics kills the whole worker process.
// enqueueTick calls the application's payload func on the periodic
// goroutine without a recover, so one bad schedule (a nil map, an index
// out of range in the code that builds a tick's payload) takes down every
// handler of the process, unlike a handler's panic, which is recovered
// and recorded. The test runs the worker in a child process (this test
// binary again) and fails when that process dies.
func TestPeriodicAttackPanickingPayloadKillsTheProcess(t *testing.T) {
	if os.Getenv("TASUKI_ATTACK_CHILD") == "periodic-panic" {
		periodicPanicChild(t)
		return
	}
	t.Parallel()
	cmd := osexec.Command(os.Args[0], "-test.run=^TestPeriodicAttackPanickingPayloadKillsTheProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "TASUKI_ATTACK_CHILD=periodic-panic", "TEST_DATABASE_URL="+testdb.URL())
	out, err := cmd.CombinedOutput()
	if len(out) > 4000 {
		out = out[:4000]
	}
	assert.NoError(t, err, "the worker process must survive a periodic payload func that panics; it died:\n%s", out)
}

// periodicPanicChild is the child process of
// TestPeriodicAttackPanickingPayloadKillsTheProcess: a worker with a
// schedule whose payload func panics, which must go on running jobs.
func periodicPanicChild(t *testing.T) {
	pool := testdb.New(t)
	called := make(chan struct{}, 1)
	w, err := worker.New(pool, worker.Config{Queue: "default", PollInterval: 20 * time.Millisecond, Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[task]) error { return nil }),
		worker.HandleFunc(func(context.Context, *tasuki.Job[patk]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(worker.Periodic("boom", worker.Every(time.Hour), func() (patk, *tasuki.InsertOpts) {
		select {
		case called <- struct{}{}:
		default:
		}
		var m map[string]int
		m["x"] = 1 // a bug in the application's payload code
		return patk{}, nil
	}, worker.PeriodicOpts{RunOnStart: true})))
	stop := running(t, w)
	waitFor(t, called, "the payload func")
	client := newClient[task](t, pool)
	id := insert(t, client, task{N: 1}, nil)
	eventually(t, "the worker still runs jobs", func() bool { return jobStatus(t, client, id) == tasuki.StatusCompleted })
	stop()
}

// Guards against this: a cron schedule that never fires (February 30th parses, as
// every field is in range) makes robfig's Next return the zero time. The
// worker takes the zero time for "not started" and for a due tick: it
// enqueues a job for the tick 0001-01-01, to run at once, and then never
// waits: every round restarts the schedule, calls the payload func and
// walks the catch-up loop over the zero tick 1,000,000 times (each Next a
// five-year search), burning a CPU for seconds per round while every other
// schedule of the worker waits (the 1 s probe here gets its second tick
// after tens of seconds, its ticks in between collapsed). Expected: no job
// and no call, or Cron refusing the spec.
func TestPeriodicAttackCronThatNeverFires(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	never, err := worker.Cron("0 0 30 2 *")
	if err != nil {
		return // refusing the spec is a fine answer
	}
	var calls atomic.Int64
	w, err := worker.New(pool, worker.Config{Queue: "default", Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[patk]) error { return nil }))
	require.NoError(t, err)
	var opt *tasuki.InvalidOptionError
	require.ErrorAs(t, w.AddPeriodic(worker.Periodic("never", never, func() (patk, *tasuki.InsertOpts) {
		calls.Add(1)
		return patk{N: 1}, nil
	}, worker.PeriodicOpts{})), &opt, "a schedule with no tick to come is refused")
	// A probe in the same loop: once it enqueued two ticks, the loop went
	// over "never" more than once.
	require.NoError(t, w.AddPeriodic(worker.Periodic("probe", worker.Every(time.Second), func() (patk, *tasuki.InsertOpts) {
		return patk{N: 2}, nil
	}, worker.PeriodicOpts{})))
	stop := running(t, w)
	eventually(t, "two ticks of the probe", func() bool { return len(patkTicks(t, pool, "probe")) >= 2 })
	stop()
	assert.Zero(t, calls.Load(), "the payload func of a schedule that never fires was called (a hot loop)")
	assert.Empty(t, patkTicks(t, pool, "never"), "jobs enqueued for a schedule that never fires")
}

// Guards against this: RunMissedOnce promises one job "for the latest" missed tick,
// but the catch-up walks tick by tick from tasuki_periodic.last_tick and
// stops after maxCatchUp (1,000,000) steps: an Every(time.Second) schedule
// that did not run for 30 days (or an Every(time.Minute) one for two
// years) enqueues the tick of ~11.6 days after last_tick, weeks in the
// past, instead of the latest. Fix: compute the latest tick at or before
// now directly (for Every: now.Truncate(d)) or walk back from now, not
// forward from last_tick.
func TestPeriodicAttackRunMissedOnceAfterALongGap(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	start := time.Now().UTC()
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_periodic (name, kind, schedule, last_tick) VALUES ('gap', 'patk', 'every 1s', $1)`,
		start.Truncate(time.Second).Add(-30*24*time.Hour))
	require.NoError(t, err)
	w, err := worker.New(pool, worker.Config{Queue: "default", Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[patk]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(worker.Periodic("gap", worker.Every(time.Second), func() (patk, *tasuki.InsertOpts) {
		return patk{}, nil
	}, worker.PeriodicOpts{Missed: worker.RunMissedOnce})))
	stop := running(t, w)
	eventually(t, "the missed tick", func() bool { return len(patkTicks(t, pool, "gap")) >= 1 })
	stop()
	for at := range patkTicks(t, pool, "gap") {
		assert.False(t, at.Before(start.Truncate(time.Second)),
			"enqueued tick %s, %s before the worker started: not the latest missed tick", at, start.Sub(at).Round(time.Hour))
	}
}

// Guards against this: a tick's job is enqueued (committed) before tasuki_periodic
// records the tick, in another statement. A process killed or shut down
// between the two (here: the record fails, as when Run's context ends
// right after the insert) leaves last_tick behind. Once the tick's job
// finished and was deleted by retention (a completed job is kept 24 h by
// default, less by many settings), the unique key no longer guards the
// tick, and the next process to start with RunMissedOnce enqueues and runs
// the same tick again. Fix: insert the tick's job and record last_tick in
// one transaction (Inserter.InsertManyTx with PeriodicRecord).
func TestPeriodicAttackTickRunTwiceAfterLostRecordAndRetention(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	_, err := pool.Exec(ctx, `INSERT INTO tasuki_periodic (name, kind, schedule, last_tick) VALUES ('daily', 'patk', 'every 24h0m0s', $1)`,
		day.Add(-48*time.Hour))
	require.NoError(t, err)
	// The process dies between the insert and the record: the record
	// never lands.
	_, err = pool.Exec(ctx, `
		CREATE FUNCTION attack_fail_record() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'simulated: the process died before PeriodicRecord'; END $$;
		CREATE TRIGGER attack_fail_record BEFORE INSERT OR UPDATE ON tasuki_periodic
		FOR EACH ROW EXECUTE FUNCTION attack_fail_record();`)
	require.NoError(t, err)

	var mu sync.Mutex
	runs := map[time.Time]int{}
	handler := worker.HandleFunc(func(_ context.Context, job *tasuki.Job[patk]) error {
		var meta struct {
			Tick time.Time `json:"periodic_tick"`
		}
		if err := json.Unmarshal(job.Metadata, &meta); err != nil {
			return err
		}
		mu.Lock()
		runs[meta.Tick.UTC()]++
		mu.Unlock()
		return nil
	})
	p := worker.Periodic("daily", worker.Every(24*time.Hour), func() (patk, *tasuki.InsertOpts) { return patk{}, nil },
		worker.PeriodicOpts{Missed: worker.RunMissedOnce})
	unfinished := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tasuki_job WHERE kind = 'patk' AND status <> 'completed'`).Scan(&n))
		return n
	}

	watch := newLogWatch()
	failed := watch.on("periodic job not enqueued")
	w1, err := worker.New(pool, worker.Config{Queue: "default", PollInterval: 20 * time.Millisecond, Logger: watch.logger()}, handler)
	require.NoError(t, err)
	require.NoError(t, w1.AddPeriodic(p))
	stop1 := running(t, w1)
	waitFor(t, failed, "the failed record")
	eventually(t, "the first process's jobs to finish", func() bool { return unfinished() == 0 })
	stop1()

	// The restart; meanwhile retention deleted the finished job.
	_, err = pool.Exec(ctx, `DROP TRIGGER attack_fail_record ON tasuki_periodic`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM tasuki_job WHERE kind = 'patk' AND status = 'completed'`)
	require.NoError(t, err)

	other, err := pgxpool.NewWithConfig(ctx, pool.Config())
	require.NoError(t, err)
	t.Cleanup(other.Close)
	w2, err := worker.New(other, worker.Config{Queue: "default", PollInterval: 20 * time.Millisecond, Logger: testLogger(t)}, handler)
	require.NoError(t, err)
	require.NoError(t, w2.AddPeriodic(p))
	stop2 := running(t, w2)
	eventually(t, "the second process records the schedule", func() bool {
		var last *time.Time
		require.NoError(t, pool.QueryRow(ctx, `SELECT last_tick FROM tasuki_periodic WHERE name = 'daily'`).Scan(&last))
		return last != nil && !last.Before(day)
	})
	eventually(t, "the second process's jobs to finish", func() bool { return unfinished() == 0 })
	stop2()
	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, runs[day], 1, "the tick %s ran %d times", day, runs[day])
}

// Guards against this: Periodic says nil options give "the kind's defaults", but the
// worker always sets InsertOpts.Metadata (periodic, periodic_tick), and a
// call's Metadata replaces the kind's default Metadata as a whole: a
// periodic job of a kind with default metadata loses it. Fix: merge the
// periodic keys into the kind's default metadata (or have Inserter merge
// Metadata maps key by key).
func TestPeriodicAttackKindDefaultMetadataLost(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	w, err := worker.New(pool, worker.Config{Queue: "default", Logger: testLogger(t)},
		worker.HandleFunc(func(context.Context, *tasuki.Job[patkTeam]) error { return nil }))
	require.NoError(t, err)
	require.NoError(t, w.AddPeriodic(worker.Periodic("team", worker.Every(24*time.Hour), func() (patkTeam, *tasuki.InsertOpts) {
		return patkTeam{}, nil
	}, worker.PeriodicOpts{RunOnStart: true})))
	stop := running(t, w)
	var meta map[string]any
	eventually(t, "the start job", func() bool {
		var b []byte
		err := pool.QueryRow(ctx, `SELECT metadata FROM tasuki_job WHERE kind = 'patk_team'`).Scan(&b)
		if err != nil {
			return false
		}
		require.NoError(t, json.Unmarshal(b, &meta))
		return true
	})
	stop()
	assert.Equal(t, "team", meta["periodic"])
	assert.Equal(t, "finance", meta["team"], "the kind's default metadata; got %v", meta)
}

// Guards against trap: Cron follows robfig/cron, which does not handle DST the
// way cron(8) does: "30 2 * * *" in Europe/Berlin fires twice on the day
// clocks go back (02:30 CEST and 02:30 CET: two ticks, two jobs) and not
// at all on the day they go forward. A "daily" job runs 0 or 2 times on
// those days. Each tick is enqueued once, but the ticks themselves are
// wrong. Fix: document it loudly, or skip a repeated wall time and run a
// skipped one at the next valid instant, as cron(8) does.
func TestPeriodicAttackCronDST(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	s, err := worker.Cron("CRON_TZ=Europe/Berlin 30 2 * * *")
	require.NoError(t, err)
	perDay := map[string]int{}
	for at := s.Next(time.Date(2030, 1, 1, 0, 0, 0, 0, berlin)); at.Year() == 2030; at = s.Next(at) {
		perDay[at.In(berlin).Format("2006-01-02")]++
	}
	// As documented on Cron: in the hour the clocks skip, no tick; in the
	// hour they repeat, two. Every other day has one.
	for d := time.Date(2030, 1, 1, 12, 0, 0, 0, berlin); d.Year() == 2030; d = d.AddDate(0, 0, 1) {
		day := d.Format("2006-01-02")
		want := 1
		switch day {
		case "2030-03-31":
			want = 0
		case "2030-10-27":
			want = 2
		}
		assert.Equal(t, want, perDay[day], "ticks of a daily schedule on %s", day)
	}
}
