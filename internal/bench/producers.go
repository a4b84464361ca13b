package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/tasuki"
)

// Defaults of ProducersConfig.
const (
	// DefaultProducers is how many goroutines insert single jobs at once.
	DefaultProducers = 50
	// DefaultBulkProducers is how many goroutines insert batches at once.
	DefaultBulkProducers = 10
	// DefaultBatch is the jobs of one batch.
	DefaultBatch = 100
)

// ProducersConfig says how Producers measures.
type ProducersConfig struct {
	// URL is the database; tasuki's schema must be applied.
	URL string
	// Producers is how many goroutines insert single jobs at once.
	// Defaults to 50.
	Producers int
	// BulkProducers is how many goroutines insert batches at once.
	// Defaults to 10, or Producers if fewer.
	BulkProducers int
	// Batch is the jobs of one batch. Defaults to 100.
	Batch int
	// Turn is how long each way of inserting runs per turn. Defaults to 2 s.
	Turn time.Duration
	// Turns is how many turns each way of inserting gets, in rotation with
	// the others, so that a drift of the machine's speed affects all alike.
	// Defaults to 3.
	Turns int
}

func (c *ProducersConfig) defaults() {
	if c.Producers == 0 {
		c.Producers = DefaultProducers
	}
	if c.BulkProducers == 0 {
		c.BulkProducers = min(DefaultBulkProducers, c.Producers)
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	if c.Turn == 0 {
		c.Turn = 2 * time.Second
	}
	if c.Turns == 0 {
		c.Turns = 3
	}
}

// ProducersResult is the outcome of Producers: jobs per second of each way
// of inserting.
type ProducersResult struct {
	Producers, BulkProducers, Batch int
	// Plain is a plain one-row INSERT per transaction; Insert, InsertTx
	// (in a transaction that also inserts one plain row) are tasuki's.
	// PlainTx is two plain rows in an explicit transaction: InsertTx's own
	// floor.
	Plain, Insert, InsertTx, PlainTx float64
	// PlainCopy is a plain COPY of Batch rows per transaction; InsertMany
	// tasuki's.
	PlainCopy, InsertMany float64
}

func (r ProducersResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "insert, %d producers at once: plain INSERT %.0f rows/s; Insert %.0f jobs/s (%.0f%%); InsertTx with one row of the caller's %.0f jobs/s (%.0f%%; two plain rows in a transaction: %.0f/s, %.0f%%)\n",
		r.Producers, r.Plain, r.Insert, 100*r.Insert/r.Plain, r.InsertTx, 100*r.InsertTx/r.Plain, r.PlainTx, 100*r.PlainTx/r.Plain)
	fmt.Fprintf(&b, "insert, %d producers of %d-job batches at once: plain COPY %.0f rows/s; InsertMany %.0f jobs/s (%.0f%%)",
		r.BulkProducers, r.Batch, r.PlainCopy, r.InsertMany, 100*r.InsertMany/r.PlainCopy)
	return b.String()
}

// Producers measures inserts from many goroutines at once, each way side
// by side with its plain counterpart on the same pool, in turns: single
// inserts against a plain one-row INSERT per transaction, and batches
// against a plain COPY.
func Producers(ctx context.Context, cfg ProducersConfig) (ProducersResult, error) {
	cfg.defaults()
	res := ProducersResult{Producers: cfg.Producers, BulkProducers: cfg.BulkProducers, Batch: cfg.Batch}
	pool, err := openFor(ctx, cfg.URL, nil, max(cfg.Producers, cfg.BulkProducers))
	if err != nil {
		return res, err
	}
	defer pool.Close()
	queue := queueName("producers")
	defer cleanup(pool, queue)
	client, err := tasuki.NewClient[noop](pool, tasuki.ClientConfig{Queue: queue})
	if err != nil {
		return res, err
	}
	q := db.New(pool)
	batch := make([]noop, cfg.Batch)
	type way struct {
		producers, per int
		op             func() error
		rate           *float64
	}
	ways := []way{
		{cfg.Producers, 1, func() error { return q.BenchPlainInsert(ctx, queue) }, &res.Plain},
		{cfg.Producers, 1, func() error { _, err := client.Insert(ctx, noop{}, nil); return err }, &res.Insert},
		{cfg.Producers, 1, func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if err := db.New(tx).BenchPlainInsert(ctx, queue); err != nil {
					return err
				}
				_, err := client.InsertTx(ctx, tx, noop{}, nil)
				return err
			})
		}, &res.InsertTx},
		{cfg.Producers, 1, func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if err := db.New(tx).BenchPlainInsert(ctx, queue); err != nil {
					return err
				}
				return db.New(tx).BenchPlainInsert(ctx, queue)
			})
		}, &res.PlainTx},
		{cfg.BulkProducers, cfg.Batch, func() error {
			rows := make([]db.JobInsertCopyParams, cfg.Batch)
			now := time.Now()
			for i := range rows {
				rows[i] = db.JobInsertCopyParams{Queue: queue, Kind: "bench", Payload: []byte("{}"), MaxAttempts: 25, ScheduledAt: now, Metadata: []byte("{}")}
			}
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := db.New(tx).JobInsertCopy(ctx, rows)
				return err
			})
		}, &res.PlainCopy},
		{cfg.BulkProducers, cfg.Batch, func() error { _, err := client.InsertMany(ctx, batch, nil); return err }, &res.InsertMany},
	}
	elapsed := make([]time.Duration, len(ways))
	done := make([]int64, len(ways))
	for turn := 0; turn <= cfg.Turns; turn++ {
		for i, w := range ways {
			// Turn 0 warms up: connections, prepared statements.
			d := cfg.Turn
			if turn == 0 {
				d = cfg.Turn / 4
			}
			n, took, err := hammer(ctx, w.producers, d, w.op)
			if err != nil {
				return res, err
			}
			if turn > 0 {
				elapsed[i] += took
				done[i] += n * int64(w.per)
			}
		}
		// Keep the table as small as it was: a growing table would make the
		// later turns slower.
		cleanup(pool, queue)
	}
	if err := client.Flush(ctx); err != nil {
		return res, err
	}
	for i, w := range ways {
		*w.rate = float64(done[i]) / elapsed[i].Seconds()
	}
	return res, nil
}

// hammer runs op from producers goroutines for d and returns how many ops
// completed and how long they took in all, up to the last one to finish.
func hammer(ctx context.Context, producers int, d time.Duration, op func() error) (int64, time.Duration, error) {
	var n atomic.Int64
	start := time.Now()
	stop := start.Add(d)
	err := together(producers, func(int) error {
		for time.Now().Before(stop) && ctx.Err() == nil {
			if err := op(); err != nil {
				return err
			}
			n.Add(1)
		}
		return nil
	})
	return n.Load(), time.Since(start), err
}

// together runs producer(i) for each i in [0, n), all at once, each in a
// goroutine of its own, and returns once all have returned, with the
// first error one of them returned. The producers of every run go through
// it: the insert run's, which insert as fast as they can, and the latency
// run's, which keep to a rate.
func together(n int, producer func(i int) error) error {
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := producer(i); err != nil {
				once.Do(func() { firstErr = err })
			}
		}()
	}
	wg.Wait()
	return firstErr
}
