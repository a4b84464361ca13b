package tasukiotel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/tasukiq/tasuki/tasuki"
)

// QueueMetricsTimeout bounds each read of the queue depths that a
// collection of the metrics makes.
const QueueMetricsTimeout = 5 * time.Second

// RegisterQueueMetrics registers two gauges read from admin.Depths each
// time the meter provider's reader collects:
//
//   - tasuki.queue.depth ({job}): a queue's pending jobs, with the
//     attributes queue and state, "runnable" (their time has come) or
//     "scheduled" (delayed jobs and retries waiting for theirs);
//   - tasuki.queue.oldest_runnable_age (s): how long the queue's oldest
//     runnable job has waited since its scheduled time, by the database
//     clock; 0 when none is runnable. Attribute queue.
//
// The read takes one cheap query on the pending jobs' index, bounded by
// QueueMetricsTimeout; an error (the database is down, the schema is not
// migrated) is returned to the SDK, which reports it through
// otel.Handle, and the collection goes on without these gauges. A queue
// once seen that has no pending job left is reported with zeros rather
// than dropped, so that its series falls to 0.
//
// Call it once per process, in the process that should report them (every
// process sees the same numbers: one is enough). unregister stops the
// reports.
func (in *Instrumentation) RegisterQueueMetrics(admin *tasuki.Admin) (unregister func() error, err error) {
	if admin == nil {
		return nil, errors.New("tasukiotel: RegisterQueueMetrics needs a *tasuki.Admin: make one with tasuki.NewAdmin(pool)")
	}
	depth, err := in.meter.Int64ObservableGauge(MetricQueueDepth, metric.WithUnit("{job}"),
		metric.WithDescription("Pending jobs of a queue: runnable now, or scheduled for later."))
	if err != nil {
		return nil, fmt.Errorf("tasukiotel: create the instrument %s on Config.MeterProvider: %w", MetricQueueDepth, err)
	}
	age, err := in.meter.Float64ObservableGauge(MetricQueueOldestRunnableAge, metric.WithUnit("s"),
		metric.WithDescription("How long the oldest runnable job of a queue has waited since its scheduled time; 0 when none is runnable."))
	if err != nil {
		return nil, fmt.Errorf("tasukiotel: create the instrument %s on Config.MeterProvider: %w", MetricQueueOldestRunnableAge, err)
	}
	q := &queueObserver{admin: admin, depth: depth, age: age, seen: map[string]*queueAttrs{}}
	reg, err := in.meter.RegisterCallback(q.observe, depth, age)
	if err != nil {
		return nil, fmt.Errorf("tasukiotel: register the callback of the queue gauges on Config.MeterProvider: %w", err)
	}
	return reg.Unregister, nil
}

// queueObserver reports the queue gauges.
type queueObserver struct {
	admin *tasuki.Admin
	depth metric.Int64ObservableGauge
	age   metric.Float64ObservableGauge

	mu sync.Mutex // one collection at a time
	// seen are the queues reported so far, with their attribute sets.
	seen  map[string]*queueAttrs
	round uint64
}

type queueAttrs struct {
	runnable, scheduled, queue metric.ObserveOption
	// round is the last collection that found the queue.
	round uint64
}

func (q *queueObserver) observe(ctx context.Context, o metric.Observer) error {
	ctx, cancel := context.WithTimeout(ctx, QueueMetricsTimeout)
	defer cancel()
	depths, err := q.admin.Depths(ctx)
	if err != nil {
		return fmt.Errorf("tasukiotel: %s and %s not reported: %w", MetricQueueDepth, MetricQueueOldestRunnableAge, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.round++
	for _, d := range depths {
		a := q.seen[d.Queue]
		if a == nil {
			a = newQueueAttrs(d.Queue)
			if len(q.seen) < maxCachedPairs {
				q.seen[d.Queue] = a
			}
		}
		a.round = q.round
		o.ObserveInt64(q.depth, d.Runnable, a.runnable)
		o.ObserveInt64(q.depth, d.Scheduled, a.scheduled)
		o.ObserveFloat64(q.age, d.OldestRunnableAge.Seconds(), a.queue)
	}
	for _, a := range q.seen {
		if a.round != q.round { // drained since
			o.ObserveInt64(q.depth, 0, a.runnable)
			o.ObserveInt64(q.depth, 0, a.scheduled)
			o.ObserveFloat64(q.age, 0, a.queue)
		}
	}
	return nil
}

func newQueueAttrs(queue string) *queueAttrs {
	return &queueAttrs{
		runnable:  metric.WithAttributeSet(attribute.NewSet(AttrQueue.String(queue), AttrState.String("runnable"))),
		scheduled: metric.WithAttributeSet(attribute.NewSet(AttrQueue.String(queue), AttrState.String("scheduled"))),
		queue:     metric.WithAttributeSet(attribute.NewSet(AttrQueue.String(queue))),
	}
}
