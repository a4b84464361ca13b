package tasukiotel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/tasukiq/tasuki/otel"

// DefaultMetadataKey is Config.MetadataKey's default.
const DefaultMetadataKey = "otel"

// Config configures an [Instrumentation]. The zero value is valid: every
// field has a default.
type Config struct {
	// TracerProvider creates the spans. Defaults to
	// otel.GetTracerProvider(), the global one, as it is when New is
	// called (a global provider set later is used too: the global one
	// delegates to it).
	TracerProvider trace.TracerProvider
	// MeterProvider creates the instruments. Defaults to
	// otel.GetMeterProvider(), the global one.
	MeterProvider metric.MeterProvider
	// Propagator writes a span's context into a job's metadata and reads
	// it back. Defaults to otel.GetTextMapPropagator(), the global one,
	// as it is when New is called; when that carries no fields (nobody set
	// one: the global default is a no-op) to propagation.TraceContext{},
	// so that the trace context travels with the job all the same. Set
	// the global propagator before calling New, or set this field.
	Propagator propagation.TextMapPropagator
	// MetadataKey is the key of job metadata (tasuki.InsertOpts.Metadata)
	// under which the propagator's fields (traceparent, tracestate,
	// baggage) are stored, as a JSON object of strings. Producers and
	// workers must agree on it. The key is reserved: what the
	// application puts under it is replaced at insert; choose another
	// key if its metadata uses "otel". Valid UTF-8 without quotes,
	// backslashes or control characters. Defaults to "otel".
	MetadataKey string
}

// Instrumentation traces and measures the inserts of the clients and the
// attempts of the workers it is given to. Make it with New, once per
// process, and share it: it is safe for concurrent use.
type Instrumentation struct {
	tracer      trace.Tracer
	meter       metric.Meter
	propagator  propagation.TextMapPropagator
	metadataKey string
	// quotedKey is MetadataKey as PostgreSQL writes it in a jsonb
	// object (New refuses a key it would escape): a job's metadata that
	// does not contain it carries no trace context, and is not parsed.
	quotedKey []byte

	inserted metric.Int64Counter
	finished metric.Int64Counter
	duration metric.Float64Histogram

	// pairs caches what is the same for every job of one queue and kind:
	// span names and attributes, metric attribute sets. It is copied on
	// write, so that the hot path reads it without a lock.
	pairs   atomic.Pointer[map[pair]*pairAttrs]
	pairsMu sync.Mutex
}

// New returns an Instrumentation configured by cfg, with its instruments
// created on cfg.MeterProvider.
func New(cfg Config) (*Instrumentation, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = otel.GetTextMapPropagator()
		if len(cfg.Propagator.Fields()) == 0 {
			cfg.Propagator = propagation.TraceContext{}
		}
	}
	if cfg.MetadataKey == "" {
		cfg.MetadataKey = DefaultMetadataKey
	}
	err := checkMetadataKey(cfg.MetadataKey)
	if err != nil {
		return nil, err
	}
	in := &Instrumentation{
		tracer:      cfg.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		meter:       cfg.MeterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)),
		propagator:  cfg.Propagator,
		metadataKey: cfg.MetadataKey,
		quotedKey:   []byte(`"` + cfg.MetadataKey + `"`),
	}
	in.pairs.Store(&map[pair]*pairAttrs{})
	instrument := func(name string, err error) error {
		if err != nil {
			return fmt.Errorf("tasukiotel: create the instrument %s on Config.MeterProvider (check the provider's views and limits): %w", name, err)
		}
		return nil
	}
	in.inserted, err = in.meter.Int64Counter(MetricJobsInserted, metric.WithUnit("{job}"),
		metric.WithDescription("Jobs inserted, by queue and kind; a unique insert that found its job existing is not counted."))
	if err := instrument(MetricJobsInserted, err); err != nil {
		return nil, err
	}
	in.finished, err = in.meter.Int64Counter(MetricJobsFinished, metric.WithUnit("{job}"),
		metric.WithDescription("Job attempts ended, by queue, kind and outcome."))
	if err := instrument(MetricJobsFinished, err); err != nil {
		return nil, err
	}
	in.duration, err = in.meter.Float64Histogram(MetricJobDuration, metric.WithUnit("s"),
		metric.WithDescription("How long a job's attempt ran (its middleware and handler), by queue, kind and outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err := instrument(MetricJobDuration, err); err != nil {
		return nil, err
	}
	return in, nil
}

// checkMetadataKey says why key cannot be Config.MetadataKey: the key must
// appear in stored metadata as it is, between quotes, for the worker's
// quick look for it (quotedKey) to find it.
func checkMetadataKey(key string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // jsonb writes <, > and & as they are
	if err := enc.Encode(key); err != nil || !utf8.ValidString(key) || b.String() != `"`+key+`"`+"\n" {
		return fmt.Errorf("tasukiotel: Config.MetadataKey %q cannot be used: use valid UTF-8 without quotes, backslashes or control characters, such as the default %q",
			key, DefaultMetadataKey)
	}
	return nil
}

// The names of the instruments.
const (
	// MetricJobsInserted counts inserted jobs ({job}); attributes queue
	// and kind.
	MetricJobsInserted = "tasuki.jobs.inserted"
	// MetricJobsFinished counts ended attempts ({job}); attributes queue,
	// kind and outcome.
	MetricJobsFinished = "tasuki.jobs.finished"
	// MetricJobDuration is the histogram of attempt durations (s);
	// attributes queue, kind and outcome.
	MetricJobDuration = "tasuki.job.duration"
	// MetricQueueDepth is the gauge of pending jobs ({job}); attributes
	// queue and state (runnable or scheduled).
	MetricQueueDepth = "tasuki.queue.depth"
	// MetricQueueOldestRunnableAge is the gauge of how long the oldest
	// runnable job of a queue has waited (s); attribute queue.
	MetricQueueOldestRunnableAge = "tasuki.queue.oldest_runnable_age"
)

// The attribute keys of the metrics. The spans use the messaging semantic
// conventions' keys instead (messaging.destination.name for the queue).
const (
	// AttrQueue is the job's queue.
	AttrQueue = attribute.Key("queue")
	// AttrKind is the job's kind.
	AttrKind = attribute.Key("kind")
	// AttrOutcome is how an attempt ended: see Outcome.
	AttrOutcome = attribute.Key("outcome")
	// AttrState says which pending jobs tasuki.queue.depth counts:
	// "runnable" or "scheduled".
	AttrState = attribute.Key("state")
	// AttrJobKind is the span attribute of the job's kind.
	AttrJobKind = attribute.Key("tasuki.job.kind")
	// AttrJobAttempt is the span attribute of the attempt, counting from 1.
	AttrJobAttempt = attribute.Key("tasuki.job.attempt")
	// AttrJobOutcome is the span attribute of the attempt's outcome.
	AttrJobOutcome = attribute.Key("tasuki.job.outcome")
)

// durationBuckets suit jobs from milliseconds to minutes; the SDK's
// default buckets are meant for milliseconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 300}

// systemTasuki is messaging.system: tasuki is not among the convention's
// well-known values.
var systemTasuki = semconv.MessagingSystemKey.String("tasuki")

type pair struct{ queue, kind string }

// pairAttrs is what every span and measurement of one queue and kind
// shares.
type pairAttrs struct {
	processName  string
	processAttrs []attribute.KeyValue
	inserted     metric.AddOption
	// finishedAdd and durationRecord hold each outcome's attributes, for
	// the counter and the histogram: as slices made once, since passing
	// one option to the variadic methods makes a slice on every call.
	finishedAdd    [numOutcomes][]metric.AddOption
	durationRecord [numOutcomes][]metric.RecordOption
}

// maxCachedPairs bounds the cache: an application has a few queues and
// kinds, but nothing stops it from making up names as it goes.
const maxCachedPairs = 1024

// attrsOf returns the cached attributes of queue and kind, building them
// on first use.
func (in *Instrumentation) attrsOf(queue, kind string) *pairAttrs {
	key := pair{queue, kind}
	if a, ok := (*in.pairs.Load())[key]; ok {
		return a
	}
	a := newPairAttrs(queue, kind)
	in.pairsMu.Lock()
	defer in.pairsMu.Unlock()
	old := *in.pairs.Load()
	if cached, ok := old[key]; ok {
		return cached
	}
	if len(old) >= maxCachedPairs {
		return a
	}
	next := make(map[pair]*pairAttrs, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = a
	in.pairs.Store(&next)
	return a
}

func newPairAttrs(queue, kind string) *pairAttrs {
	a := &pairAttrs{
		processName: "process " + queue,
		processAttrs: []attribute.KeyValue{
			systemTasuki,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(queue),
			AttrJobKind.String(kind),
		},
		inserted: metric.WithAttributeSet(attribute.NewSet(AttrQueue.String(queue), AttrKind.String(kind))),
	}
	for o := range numOutcomes {
		set := metric.WithAttributeSet(attribute.NewSet(AttrQueue.String(queue), AttrKind.String(kind), AttrOutcome.String(o.String())))
		a.finishedAdd[o], a.durationRecord[o] = []metric.AddOption{set}, []metric.RecordOption{set}
	}
	return a
}
