// Package tasukitest holds test helpers for code that inserts tasuki jobs:
// assertions that a job was, or was not, inserted ([RequireInserted],
// [RequireNotInserted], [RequireManyInserted]), and [Work], which runs one
// job through a worker's handler from a test.
//
// The assertions work on one database shared by many tests running in
// parallel, inserting jobs of the same kinds: each sees only its own test's
// jobs, in one of two scopes.
//
//   - Transaction scope: the functions ending in Tx see only the jobs the
//     transaction they are given inserted itself, in any of its savepoints;
//     other transactions' jobs, committed or not, are not theirs. For code
//     under test that inserts with InsertTx in the test's transaction,
//     which the test then rolls back.
//   - Test scope: the other functions, given a context from [WithScope], see
//     only the jobs inserted with that context (or one derived from it)
//     through a client whose ClientConfig.InsertMiddleware includes
//     [ScopeMiddleware], which marks each job's metadata with the scope.
//     Given a context without a scope, they see every job in the database:
//     fine on a database, or schema, of the test's own.
//
// A job matches a [Want] when it has every property the Want sets; a nil
// *Want matches any job of the kind. Payload and metadata are compared by
// JSON containment, so a Want names only the fields that matter.
//
// A failed assertion names what it wanted and what it found (how many jobs,
// their ids and kinds, and how the nearest job differs), then stops the test
// with FailNow. The helpers take a [TB], which *testing.T satisfies.
package tasukitest
