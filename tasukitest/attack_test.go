package tasukitest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/tasukitest"
)

// A job another transaction inserted and committed after tx began, which
// tx then only changed, is reported as inserted by tx: RequireInsertedTx
// documents "those it only changed are not seen".
func TestAttackChangedAfterBeginSeenAsInserted(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	tx := begin(t, pool)
	_, err := tx.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	other, err := newClient[SendEmail](t, pool, tasuki.ClientConfig{}).Insert(ctx, SendEmail{To: "someone else"}, nil)
	require.NoError(t, err)
	tag, err := tx.Exec(ctx, "UPDATE tasuki_job SET priority = 7 WHERE id = $1", other.ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	r := &recorder{}
	tasukitest.RequireNotInsertedTx[SendEmail](ctx, r, tx, nil)
	r.passed(t)
}

// Scope carried through derived contexts. (Held.)
func TestAttackScopeDerivedContext(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	sctx := tasukitest.WithScope(ctx, t)
	type k struct{}
	dctx, cancel := context.WithCancel(context.WithValue(sctx, k{}, 1))
	defer cancel()
	c := newClient[SendEmail](t, pool, scoped)
	_, err := c.Insert(dctx, SendEmail{To: "a"}, &tasuki.InsertOpts{Metadata: map[string]any{"n": 1.0}})
	require.NoError(t, err)
	_, err = c.Insert(ctx, SendEmail{To: "a"}, nil) // unscoped neighbour
	require.NoError(t, err)
	j := tasukitest.RequireInserted[SendEmail](dctx, t, pool, &tasukitest.Want{Payload: map[string]any{"to": "a"}, Metadata: map[string]any{"n": 1}})
	require.Equal(t, "a", j.Payload.To)
}

// A nil *T (or map) payload means any payload, as a nil one does.
func TestAttackTypedNilPayloadMeansAny(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	_, err := newClient[SendEmail](t, pool, tasuki.ClientConfig{}).Insert(ctx, SendEmail{To: "a"}, nil)
	require.NoError(t, err)
	for _, payload := range []any{(*SendEmail)(nil), map[string]any(nil)} {
		r := &recorder{}
		tasukitest.RequireInserted[SendEmail](ctx, r, pool, &tasukitest.Want{Payload: payload})
		r.passed(t)
	}
}

// A Want.Kind that contradicts T's own kind fails, instead of decoding
// another kind's job into T.
func TestAttackWantKindContradictingTFails(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	_, err := newClient[SendSMS](t, pool, tasuki.ClientConfig{}).Insert(ctx, SendSMS{}, nil)
	require.NoError(t, err)
	r := &recorder{}
	tasukitest.RequireInserted[SendEmail](ctx, r, pool, &tasukitest.Want{Kind: "send_sms"})
	containsAll(t, r.failed(t), `Want.Kind "send_sms" contradicts the kind of the payload type, "send_email"`)
	r = &recorder{}
	tasukitest.RequireInserted[SendSMS](ctx, r, pool, &tasukitest.Want{Kind: "send_sms"})
	r.passed(t)
}
