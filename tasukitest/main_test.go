package tasukitest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type SendEmail struct {
	To      string `json:"to"`
	Subject string `json:"subject,omitempty"`
}

func (SendEmail) Kind() string { return "send_email" }

type SendSMS struct {
	Number string `json:"number"`
}

func (SendSMS) Kind() string { return "send_sms" }

// Resize has no omitempty: a want of it compares both fields.
type Resize struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

func (Resize) Kind() string { return "resize" }

// sharedTests run in parallel on one database, and each of them three
// times at once: every one inserts jobs of the same kinds, with the same
// payloads, as the others, and sees only its own.
var sharedTests = []struct {
	name string
	f    func(t *testing.T, pool *pgxpool.Pool)
}{
	{"Tx/OwnJobsOnly", testTxOwnJobsOnly},
	{"Tx/NothingInserted", testTxNothingInserted},
	{"Tx/Savepoints", testTxSavepoints},
	{"Tx/ManySavepoints", testTxManySavepoints},
	{"Tx/RepeatableRead", testTxRepeatableRead},
	{"Tx/CommittedElsewhere", testTxCommittedElsewhere},
	{"Tx/ChangedNotInserted", testTxChangedNotInserted},
	{"Tx/InsertMany", testTxInsertMany},
	{"Scope/OwnJobsOnly", testScopeOwnJobsOnly},
	{"Scope/InsertMany", testScopeInsertMany},
	{"Scope/InTx", testScopeInTx},
	{"Scope/NoScopeInContext", testScopeNoScopeInContext},
	{"Want/Fields", testWantFields},
	{"Want/Payload", testWantPayload},
	{"Want/Schedule", testWantSchedule},
	{"Want/KindWithoutMethod", testWantKindWithoutMethod},
	{"Fail/NoJobOfKind", testFailNoJobOfKind},
	{"Fail/NoneMatching", testFailNoneMatching},
	{"Fail/Differences", testFailDifferences},
	{"Fail/ManyOtherKinds", testFailManyOtherKinds},
	{"Fail/MoreThanOne", testFailMoreThanOne},
	{"Fail/NotInserted", testFailNotInserted},
	{"Fail/Many", testFailMany},
	{"Fail/Arguments", testFailArguments},
	{"Fail/Undecodable", testFailUndecodable},
	{"Fail/QueryError", testFailQueryError},
	{"Work/Outcomes", testWorkOutcomes},
	{"Work/Fail", testWorkFail},
}

func TestShared(t *testing.T) {
	// One schema, as a database shared by many tests would be, with room
	// for the connections of open transactions in every parallel test.
	_, url := testdb.Schema(t)
	pool := testdb.Pool(t, url+"&pool_max_conns=64")
	testdb.MigrateUp(t, pool)
	for _, tt := range sharedTests {
		for range 3 {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				tt.f(t, pool)
			})
		}
	}
}

// recorder is a TB that records failures instead of stopping the test.
type recorder struct {
	mu       sync.Mutex
	messages []string
	failNow  int
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages = append(r.messages, fmt.Sprintf(format, args...))
}

func (r *recorder) FailNow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNow++
}

// failed requires that r recorded one failure, stopped with FailNow, and
// returns its message.
func (r *recorder) failed(t *testing.T) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.messages, 1, "one failure reported")
	require.Equal(t, 1, r.failNow, "FailNow called once")
	t.Logf("reported: %s", r.messages[0])
	return r.messages[0]
}

// passed requires that r recorded no failure.
func (r *recorder) passed(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Empty(t, r.messages)
	require.Zero(t, r.failNow)
}

// containsAll requires that msg holds every part.
func containsAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		require.True(t, strings.Contains(msg, p), "message lacks %q:\n%s", p, msg)
	}
}

var scoped = tasuki.ClientConfig{InsertMiddleware: []tasuki.InsertMiddleware{tasukitest.ScopeMiddleware}}

func newClient[T any](t *testing.T, pool *pgxpool.Pool, cfg tasuki.ClientConfig) *tasuki.Client[T] {
	t.Helper()
	c, err := tasuki.NewClient[T](pool, cfg)
	require.NoError(t, err)
	return c
}

func newInserter(t *testing.T, pool *pgxpool.Pool, cfg tasuki.ClientConfig) *tasuki.Inserter {
	t.Helper()
	ins, err := tasuki.NewInserter(pool, cfg)
	require.NoError(t, err)
	return ins
}

// begin starts a transaction rolled back at cleanup, unless it ended.
func begin(t *testing.T, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// neighbours inserts the payloads as the other tests of a shared database
// would: committed without a scope, committed in a scope of their own, in a
// transaction left open until the test ends, and in one rolled back.
func neighbours(t *testing.T, pool *pgxpool.Pool, payloads ...any) {
	t.Helper()
	ctx := context.Background()
	params := make([]tasuki.InsertManyParams, len(payloads))
	for i, p := range payloads {
		params[i] = tasuki.InsertManyParams{Payload: p}
	}
	ins := newInserter(t, pool, scoped)
	_, err := ins.InsertMany(ctx, params)
	require.NoError(t, err)
	_, err = ins.InsertMany(tasukitest.WithScope(ctx, t), params)
	require.NoError(t, err)
	open := begin(t, pool)
	_, err = ins.InsertManyTx(tasukitest.WithScope(ctx, t), open, params)
	require.NoError(t, err)
	back := begin(t, pool)
	_, err = ins.InsertManyTx(ctx, back, params)
	require.NoError(t, err)
	require.NoError(t, back.Rollback(ctx))
}

// The interfaces take what tests have at hand.
var (
	_ tasukitest.TB = (*testing.T)(nil)
	_ tasukitest.TB = (*testing.B)(nil)
	_ tasukitest.DB = (*pgxpool.Pool)(nil)
	_ tasukitest.DB = (*pgx.Conn)(nil)
	_ tasukitest.DB = pgx.Tx(nil)
)
