package tasukiotel

import (
	"context"
	"maps"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasukiq/tasuki/tasuki"
)

// InsertMiddleware returns insert middleware that traces and counts every
// insert of the clients and inserters it is given to (in
// tasuki.ClientConfig.InsertMiddleware; in worker.Config.InsertMiddleware
// for periodic jobs).
//
// Each insert call, of one job or of a batch, gets one PRODUCER span named
// "send {queue}", or "send" when the batch spans several queues. Its
// attributes: messaging.system "tasuki", messaging.operation.type and
// messaging.operation.name "send", messaging.destination.name (the queue,
// when there is one), messaging.batch.message_count (for more than one
// job), tasuki.job.kind (when all jobs are of one kind), and, for a single
// job once inserted, messaging.message.id (its id). An insert that fails
// sets the span's status to Error and records the error.
//
// The span's context is written into each job's metadata, under
// Config.MetadataKey, as the propagator's fields (a JSON object of
// strings: traceparent, tracestate, baggage), for Middleware to continue
// the trace when a worker runs the job. Nothing is written when there is
// nothing to propagate (no tracer provider is set up).
//
// Inserted jobs are counted in tasuki.jobs.inserted, by queue and kind;
// a unique insert that found its job existing is not counted. Inside the
// caller's transaction (InsertTx, InsertManyTx) they are counted when the
// insert runs, before the transaction commits, as tasuki's own events are.
func (in *Instrumentation) InsertMiddleware() tasuki.InsertMiddleware {
	return func(ctx context.Context, jobs []*tasuki.InsertParams, next func(ctx context.Context) error) error {
		if len(jobs) == 0 {
			return next(ctx)
		}
		queue, kind := jobs[0].Opts.Queue, jobs[0].Kind
		oneQueue, oneKind := true, true
		for _, j := range jobs[1:] {
			oneQueue = oneQueue && j.Opts.Queue == queue
			oneKind = oneKind && j.Kind == kind
		}
		attrs := make([]attribute.KeyValue, 3, 6)
		attrs[0], attrs[1], attrs[2] = systemTasuki, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send")
		name := "send"
		if oneQueue {
			name = "send " + queue
			attrs = append(attrs, semconv.MessagingDestinationName(queue))
		}
		if oneKind {
			attrs = append(attrs, AttrJobKind.String(kind))
		}
		if len(jobs) > 1 {
			attrs = append(attrs, semconv.MessagingBatchMessageCount(len(jobs)))
		}
		ctx, span := in.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
		defer span.End()

		carrier := propagation.MapCarrier{}
		in.propagator.Inject(ctx, carrier)
		if len(carrier) > 0 {
			for i, j := range jobs {
				if j.Opts.Metadata == nil {
					j.Opts.Metadata = make(map[string]any, 1)
				}
				c := map[string]string(carrier)
				if i > 0 { // each job owns its metadata
					c = maps.Clone(c)
				}
				j.Opts.Metadata[in.metadataKey] = c
			}
		}

		if err := next(ctx); err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			return err
		}
		if len(jobs) == 1 && jobs[0].ID != 0 {
			span.SetAttributes(semconv.MessagingMessageID(strconv.FormatInt(jobs[0].ID, 10)))
		}
		in.countInserted(ctx, jobs)
		return nil
	}
}

// countInserted adds jobs, less the duplicates, to tasuki.jobs.inserted:
// one Add per run of jobs of one queue and kind.
func (in *Instrumentation) countInserted(ctx context.Context, jobs []*tasuki.InsertParams) {
	var n int64
	var cur *tasuki.InsertParams
	flush := func() {
		if n > 0 {
			in.inserted.Add(ctx, n, in.attrsOf(cur.Opts.Queue, cur.Kind).inserted)
		}
		n = 0
	}
	for _, j := range jobs {
		if cur == nil || j.Opts.Queue != cur.Opts.Queue || j.Kind != cur.Kind {
			flush()
			cur = j
		}
		if !j.Duplicate {
			n++
		}
	}
	flush()
}
