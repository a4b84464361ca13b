package tasuki_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// dflTenant is configuration an InsertOpts method may read; nil until the
// application sets it up (a bug, or an init order problem).
type dflTenant struct{ queue string }

var dflTenants map[string]*dflTenant

type dflPanics struct {
	Order int `json:"order"`
}

func (dflPanics) Kind() string { return "dfl_panics" }

// InsertOpts panics: dflTenants is nil.
func (dflPanics) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Queue: dflTenants["acme"].queue, Unique: &tasuki.UniqueOpts{ByArgs: true}}
}

// Guards against this: an InsertOpts method that panics is ignored without a word:
// defaultsOf recovers and returns no defaults, NewClient and NewInserter
// succeed, and every insert goes out without the kind's options. Here the
// kind's Unique is lost, so the "unique" job is inserted twice (its queue,
// attempts and timeout would be lost the same way). A Kind method that
// panics gives an error; a bad default (Priority -1) fails NewClient;
// only a panicking one passes. Fix: turn the panic into an
// *InvalidOptionError at NewClient (and at InsertMany for the Inserter).
func TestDefaultsAttackPanickingInsertOptsIgnored(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c, err := tasuki.NewClient[dflPanics](pool, tasuki.ClientConfig{})
	if err != nil {
		return // refused where the client is made: fine
	}
	first, err := c.Insert(ctx, dflPanics{Order: 7}, nil)
	if err != nil {
		return // refused at the insert: fine
	}
	second, err := c.Insert(ctx, dflPanics{Order: 7}, nil)
	require.NoError(t, err)
	assert.True(t, second.Duplicate, "the kind's default Unique was silently dropped: jobs %d and %d", first.ID, second.ID)
	require.NoError(t, c.Flush(ctx))
}

type dflReports struct {
	Day string `json:"day"`
}

func (dflReports) Kind() string { return "dfl_reports" }
func (dflReports) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Queue: "reports", MaxAttempts: 2}
}

// Guards against API trap: ClientConfig.Queue is documented as "the queue jobs
// go to unless InsertOpts.Queue says otherwise", and MaxAttempts likewise,
// but a payload type's default options override the client's explicit
// configuration: a client made with Queue "urgent" puts its jobs in the
// type's "reports" queue (where, say, no worker of the "urgent" fleet
// looks) and gives them 2 attempts instead of its 5. Fix: apply the
// type's defaults below the client's explicit configuration (or document
// the order and refuse the conflict in NewClient).
func TestDefaultsAttackOverrideClientConfig(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ctx := context.Background()
	c, err := tasuki.NewClient[dflReports](pool, tasuki.ClientConfig{Queue: "urgent", MaxAttempts: 5})
	require.NoError(t, err)
	assert.Equal(t, "urgent", c.Queue())
	job, err := c.Insert(ctx, dflReports{Day: "mon"}, nil)
	require.NoError(t, err)
	// Documented on ClientConfig and DefaultOpts: the type's defaults win
	// over the client's configuration, an insert's options over both.
	assert.Equal(t, "reports", job.Queue, "the type's default queue")
	job, err = c.Insert(ctx, dflReports{Day: "tue"}, &tasuki.InsertOpts{Queue: "urgent"})
	require.NoError(t, err)
	assert.Equal(t, "urgent", job.Queue, "the insert's queue")
	require.NoError(t, c.Flush(ctx))
}

type dflBad struct{}

func (dflBad) Kind() string                  { return "dfl_bad" }
func (dflBad) InsertOpts() tasuki.InsertOpts { return tasuki.InsertOpts{Priority: -1} }

// Guards against API trap: NewClient checks a type's default options and says
// the InsertOpts method is at fault; the Inserter checks them only per
// insert and blames the caller's options: a call that passed no options
// at all gets "InsertManyParams[0].InsertOpts.Priority" invalid. Fix: name
// the type's InsertOpts method in the error, as NewClient does.
func TestDefaultsAttackInserterBlamesTheCaller(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{})
	require.NoError(t, err)
	_, err = ins.InsertMany(context.Background(), []tasuki.InsertManyParams{{Payload: dflBad{}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "InsertOpts method", "the error blames options the caller never set: %v", err)
	require.NoError(t, ins.Flush(context.Background()))
}
