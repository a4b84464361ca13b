package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasukiq/tasuki/db"
	"github.com/tasukiq/tasuki/internal/testdb"
	"github.com/tasukiq/tasuki/tasuki"
)

// The worker's hot path is three statements: lease a batch, renew the
// leases of a batch, record the outcomes of a batch. These benchmarks time
// each on a real database and report the cost per job.
//
//	go test ./worker -run '^$' -bench . -benchtime 20x

var batchSizes = []int{10, 100, 1000}

func fill(b *testing.B, pool *pgxpool.Pool, n int) {
	b.Helper()
	c, err := tasuki.NewClient[struct{}](pool, tasuki.ClientConfig{Kind: "task"})
	if err != nil {
		b.Fatal(err)
	}
	for left := n; left > 0; left -= 50_000 {
		if _, err := c.InsertMany(context.Background(), make([]struct{}, min(left, 50_000)), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func lease(b *testing.B, q *db.Queries, n int) []*db.TasukiJob {
	b.Helper()
	rows, err := q.JobLease(context.Background(), testdb.Lease(db.JobLeaseParams{LeaseUs: time.Minute.Microseconds()}, "default", "task", n))
	if err != nil {
		b.Fatal(err)
	}
	if len(rows) != n {
		b.Fatalf("leased %d jobs, want %d", len(rows), n)
	}
	return rows
}

func perJob(b *testing.B, size int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/job")
}

func BenchmarkLeaseBatch(b *testing.B) {
	for _, size := range batchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			pool := testdb.New(b)
			fill(b, pool, b.N*size)
			q := db.New(pool)
			b.ResetTimer()
			for range b.N {
				lease(b, q, size)
			}
			perJob(b, size)
		})
	}
}

func BenchmarkFinishBatch(b *testing.B) {
	for _, size := range batchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			pool := testdb.New(b)
			fill(b, pool, b.N*size)
			q := db.New(pool)
			batches := make([][]*db.TasukiJob, b.N)
			for i := range batches {
				batches[i] = lease(b, q, size)
			}
			b.ResetTimer()
			for _, rows := range batches {
				p := finishParams(rows)
				done, err := q.JobFinishMany(context.Background(), p)
				if err != nil {
					b.Fatal(err)
				}
				if len(done) != size {
					b.Fatalf("finished %d, want %d", len(done), size)
				}
			}
			perJob(b, size)
		})
	}
}

func finishParams(rows []*db.TasukiJob) db.JobFinishManyParams {
	n := len(rows)
	p := db.JobFinishManyParams{
		Ids: make([]int64, n), Tokens: make([]pgtype.UUID, n), Statuses: make([]string, n),
		DelaysUs: make([]int64, n), Errors: make([]string, n), GiveBack: make([]bool, n),
	}
	for i, r := range rows {
		p.Ids[i], p.Tokens[i], p.Statuses[i] = r.ID, r.LeaseToken, string(db.TasukiJobStatusCompleted)
	}
	return p
}

func BenchmarkHeartbeatBatch(b *testing.B) {
	for _, size := range batchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			pool := testdb.New(b)
			fill(b, pool, size)
			q := db.New(pool)
			rows := lease(b, q, size)
			p := db.JobHeartbeatManyParams{Ids: make([]int64, size), Tokens: make([]pgtype.UUID, size), LeaseUs: time.Minute.Microseconds()}
			for i, r := range rows {
				p.Ids[i], p.Tokens[i] = r.ID, r.LeaseToken
			}
			b.ResetTimer()
			for range b.N {
				renewed, err := q.JobHeartbeatMany(context.Background(), p)
				if err != nil {
					b.Fatal(err)
				}
				if len(renewed) != size {
					b.Fatalf("renewed %d, want %d", len(renewed), size)
				}
			}
			perJob(b, size)
		})
	}
}
