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
// Handlers and the retention cleaner use the pool given to New. The
// worker's own statements go through a pool of its own, opened by Run with
// the same settings: one connection for leasing and one for writing
// outcomes and heartbeats, so that handlers holding every connection of
// the application's pool cannot hold them up. One more connection of its
// own serves LISTEN (see Config.ListenURL and Config.DisableListen for
// poolers). An idle worker sends one statement per PollInterval, and its
// retention cleaner one more per CleanInterval.
//
// How long finished jobs are kept is a setting of each queue in the
// database, not of the worker: see tasuki.Retention.
package worker
