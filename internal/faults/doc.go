// Package faults proves tasuki's promises under faults, on a real
// PostgreSQL: worker processes killed, frozen and shut down under load, the
// server restarted, connections terminated, heartbeats blocked, hostile
// input, a least-privilege role and PgBouncer in transaction mode. It holds
// only tests; the Reliability section of the README says what they show.
//
// The tests start worker processes by running their own test binary again
// with TASUKI_FAULT_ROLE set (see role_test.go), so a fault such as SIGKILL
// hits a whole process, connections and all, as it would in production.
//
//	go test -race ./internal/faults/
package faults
