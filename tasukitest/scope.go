package tasukitest

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/tasukiq/tasuki/tasuki"
)

// ScopeKey is the metadata key under which ScopeMiddleware records a
// job's test scope: "tasukitest_scope".
const ScopeKey = "tasukitest_scope"

// scopeKey is the context key of a test scope.
type scopeKey struct{}

// WithScope returns a context that carries a new test scope, named after t
// (a *testing.T) and unique among runs, tests and processes. Jobs inserted
// with it, or with a context derived from it, through a client configured
// with ScopeMiddleware carry the scope in their metadata; the assertions
// without Tx given it see only those jobs. A scope in ctx is replaced.
func WithScope(ctx context.Context, t interface{ Name() string }) context.Context {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("tasukitest: WithScope: no random bytes for a scope id: " + err.Error())
	}
	return context.WithValue(ctx, scopeKey{}, t.Name()+"#"+hex.EncodeToString(b[:]))
}

// scopeOf is the test scope ctx carries, or "".
func scopeOf(ctx context.Context) string {
	s, _ := ctx.Value(scopeKey{}).(string)
	return s
}

// ScopeMiddleware is a tasuki.InsertMiddleware that records the test scope
// of the insert's context (see WithScope) in each job's metadata, under
// ScopeKey. Add it to ClientConfig.InsertMiddleware of the clients and
// inserters a test's code inserts with. For a context without a scope it
// does nothing, so it may stay in a configuration shared with production.
func ScopeMiddleware(ctx context.Context, jobs []*tasuki.InsertParams, next func(ctx context.Context) error) error {
	if scope := scopeOf(ctx); scope != "" {
		for _, j := range jobs {
			if j.Opts.Metadata == nil {
				j.Opts.Metadata = make(map[string]any, 1)
			}
			j.Opts.Metadata[ScopeKey] = scope
		}
	}
	return next(ctx)
}

// Ensure the signature stays that of tasuki.InsertMiddleware.
var _ tasuki.InsertMiddleware = ScopeMiddleware
