// Package worker runs tasuki jobs: a [Worker] leases jobs of one queue in
// batches sized to its free slots, runs a typed [Handler] for each, renews
// the leases of its running jobs in one statement per heartbeat, and records
// outcomes in batches.
//
// Delivery is at least once: a job whose worker dies is leased again once
// its lease expires, with the lost attempt counted, so a job that kills its
// worker every time ends failed, never stuck running. Every state change is
// fenced by the job's lease token: a worker that lost its lease can no
// longer change the job.
//
// A worker needs one pool connection at a time for leasing, one for
// writing outcomes and heartbeats, and keeps one more connection of its own
// for LISTEN (see Config.ListenURL and Config.DisableListen for poolers).
// An idle worker sends one statement per PollInterval, and its retention
// cleaner one more per CleanInterval.
package worker
