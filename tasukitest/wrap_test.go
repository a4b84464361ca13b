package tasukitest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/pgtemp"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

// The transaction scope reads 32-bit xids as 64-bit ones. On a cluster of
// its own, whose xid counter pg_resetwal set just below 2^32 in epoch 7, a
// transaction's savepoints get xids of epoch 8, and a frozen job from
// before the reset has a raw xmin that, read in the new epoch, is an xid
// not yet assigned: the assertions still see exactly the transaction's
// jobs, and do not ask about that one (pg_xact_status would fail).
func TestXidWraparound(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of its own")
	}
	bin, err := postgresBin()
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := pgtemp.Start(ctx, pgtemp.Options{MaxConnections: 20})
	if errors.Is(err, pgtemp.ErrNoBinaries) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	pool := testdb.Pool(t, c.URL)
	testdb.MigrateUp(t, pool)
	client := newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	ancient, err := client.Insert(ctx, same, nil)
	require.NoError(t, err)
	// Every row so far frozen (the catalogs' too, which the reset would
	// otherwise make look newer than the new xids), keeping its raw xmin.
	_, err = pool.Exec(ctx, "VACUUM FREEZE")
	require.NoError(t, err)
	pool.Close()

	const epoch, next = 7, 1<<32 - 300
	require.NoError(t, c.StopServer(ctx))
	data := filepath.Join(c.Dir, "data")
	// The commit log segment of the new xids, as pg_resetwal's manual
	// asks: 32 pages of 32768 xids each.
	segment := filepath.Join(data, "pg_xact", "0FFF")
	require.NoError(t, os.WriteFile(segment, make([]byte, 32*8192), 0o600))
	cred := postgresCredential(t)
	if cred != nil {
		require.NoError(t, os.Chown(segment, int(cred.Uid), int(cred.Gid)))
	}
	reset := exec.CommandContext(ctx, filepath.Join(bin, "pg_resetwal"), "-e", strconv.Itoa(epoch), "-x", strconv.Itoa(next), "-D", data)
	reset.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := reset.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, c.StartServer(ctx))

	pool = testdb.Pool(t, c.URL)
	client = newClient[SendEmail](t, pool, tasuki.ClientConfig{})
	// Use up xids to 20 short of the wrap.
	for range 280 - 20 {
		_, err := pool.Exec(ctx, "SELECT pg_current_xact_id()")
		require.NoError(t, err)
	}
	neighbours(t, pool, same)
	tx := begin(t, pool)
	var top uint64
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text::numeric").Scan(&top))
	require.Equal(t, uint64(epoch), top>>32, "the transaction's xid is in the epoch set")
	var wants []tasukitest.Want
	var ids []int64
	for i := range 40 {
		sp, err := tx.Begin(ctx)
		require.NoError(t, err)
		job, err := client.InsertTx(ctx, sp, same, nil)
		require.NoError(t, err)
		require.NoError(t, sp.Commit(ctx))
		if i%10 == 0 {
			neighbours(t, pool, same)
		}
		ids = append(ids, job.ID)
		wants = append(wants, tasukitest.Want{Payload: same})
	}
	var wrapped bool
	require.NoError(t, tx.QueryRow(ctx, "SELECT bool_or(xmin::text::bigint < $1) FROM tasuki_job WHERE id = ANY($2)", top%(1<<32), ids).Scan(&wrapped))
	require.True(t, wrapped, "some savepoints' xids are past the wrap")
	var ancientXmin int64
	require.NoError(t, tx.QueryRow(ctx, "SELECT xmin::text::bigint FROM tasuki_job WHERE id = $1", ancient.ID).Scan(&ancientXmin))
	require.Less(t, ancientXmin, int64(1000), "the frozen job keeps its raw xmin")

	require.Equal(t, ids, idsOf(tasukitest.RequireManyInsertedTx(ctx, t, tx, wants)))
	require.NoError(t, tx.Rollback(ctx))
	fresh := begin(t, pool)
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, t, fresh, nil)
	_, err = client.InsertTx(ctx, fresh, same, nil)
	require.NoError(t, err)
	require.NotEqual(t, ancient.ID, tasukitest.RequireInsertedTx[SendEmail](ctx, t, fresh, nil).ID)
}

// postgresBin is the directory of the server's programs, as pgtemp finds
// it.
func postgresBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			if _, err := os.Stat(filepath.Join(filepath.Dir(real), "pg_resetwal")); err == nil {
				return filepath.Dir(real), nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_resetwal")
	if len(dirs) == 0 {
		return "", errors.New("pg_resetwal not found")
	}
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// postgresCredential is the user pgtemp runs the server as when this
// process is root, or nil.
func postgresCredential(t *testing.T) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}
