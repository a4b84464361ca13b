package tasukiotel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// Middleware returns worker middleware that traces and measures each
// attempt of a job.
//
// It starts a CONSUMER span named "process {queue}" around the rest of
// the chain and the handler, whose context carries it. When the job's
// metadata holds a trace context under Config.MetadataKey (written by
// InsertMiddleware), the span is a child of the insert's span, in its
// trace, and links to it; otherwise its parent is whatever span the
// handler's context carries. Attributes: messaging.system "tasuki",
// messaging.operation.type and messaging.operation.name "process",
// messaging.destination.name (the queue), messaging.message.id (the job's
// id), tasuki.job.kind, tasuki.job.attempt, and tasuki.job.outcome unless
// the job completed (as error.type is set only on failure). A failed
// attempt (outcome retried or failed) sets the span's status to
// Error, records the error as an exception event and sets error.type
// ("panic", "timeout", "payload_decode" or "_OTHER"); a job its handler
// canceled records the error but keeps the status unset, as the job did
// what it was told.
//
// It adds one to tasuki.jobs.finished and records the attempt's duration
// in tasuki.job.duration, both with the attributes queue, kind and
// outcome: completed, retried, failed, canceled, snoozed or given_back
// (the worker shut down before the handler finished).
//
// The outcome is the one the worker records for what the middleware
// returns: put this middleware first in worker.Config.Middleware, so that
// it sees what every other middleware decided.
func (in *Instrumentation) Middleware() worker.Middleware {
	return func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(ctx context.Context) error) error {
		a := in.attrsOf(job.Queue, job.Kind)
		// One slice of attributes: the SDK copies it once per option.
		attrs := make([]attribute.KeyValue, len(a.processAttrs), len(a.processAttrs)+2)
		copy(attrs, a.processAttrs)
		attrs = append(attrs, semconv.MessagingMessageID(strconv.FormatInt(job.ID, 10)), AttrJobAttempt.Int(job.Attempt))
		opts := make([]trace.SpanStartOption, 2, 3)
		opts[0], opts[1] = consumerKind, trace.WithAttributes(attrs...)
		parent := ctx
		if bytes.Contains(job.Metadata, in.quotedKey) {
			if pctx, sc := in.extract(ctx, job.Metadata); sc.IsValid() {
				parent = pctx
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
			}
		}
		start := time.Now()
		spanCtx, span := in.tracer.Start(parent, a.processName, opts...)
		ended := false
		defer func() {
			if ended {
				return
			}
			// Something inside panicked past the worker's own recovery
			// (another middleware): the worker records a failed attempt.
			v := recover()
			err := error(&worker.PanicError{Value: v})
			if v == nil {
				err = worker.ErrHandlerExited // runtime.Goexit
			}
			in.end(ctx, spanCtx, span, a, job, err, time.Since(start))
			if v != nil {
				panic(v)
			}
		}()
		err := next(spanCtx)
		ended = true
		in.end(ctx, spanCtx, span, a, job, err, time.Since(start))
		return err
	}
}

// end ends an attempt's span and counts it.
func (in *Instrumentation) end(ctx, spanCtx context.Context, span trace.Span, a *pairAttrs, job *tasuki.Job[json.RawMessage], err error, elapsed time.Duration) {
	o := outcomeOf(ctx, job, err)
	switch o {
	case outcomeCompleted:
		// No attribute: a span without tasuki.job.outcome completed, as
		// one without error.type did not fail. Adding one would grow the
		// span's attributes on every job.
	case outcomeRetried, outcomeFailed:
		span.SetAttributes(AttrJobOutcome.String(o.String()), semconv.ErrorTypeKey.String(errorType(ctx, err)))
		span.RecordError(err)
		var p *worker.PanicError
		if errors.As(err, &p) {
			// Its Error() has the whole stack, which the event above
			// already carries.
			span.SetStatus(codes.Error, fmt.Sprintf("panic: %v", p.Value))
		} else {
			span.SetStatus(codes.Error, err.Error())
		}
	case outcomeCanceled:
		span.SetAttributes(AttrJobOutcome.String(o.String()))
		span.RecordError(err)
	default:
		span.SetAttributes(AttrJobOutcome.String(o.String()))
	}
	span.End()
	in.finished.Add(spanCtx, 1, a.finishedAdd[o]...)
	in.duration.Record(spanCtx, elapsed.Seconds(), a.durationRecord[o]...)
}

// extract returns ctx with the trace context stored in metadata, and that
// context's span context; an invalid one when metadata holds none.
func (in *Instrumentation) extract(ctx context.Context, metadata json.RawMessage) (context.Context, trace.SpanContext) {
	carrier := carrierOf(metadata, in.metadataKey)
	if len(carrier) == 0 {
		// None, or the application's own data under the key.
		return ctx, trace.SpanContext{}
	}
	ctx = in.propagator.Extract(ctx, propagation.MapCarrier(carrier))
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsRemote() { // nothing extracted: this is the handler's own span
		return ctx, trace.SpanContext{}
	}
	return ctx, sc
}

var consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)

// outcome is how an attempt ended, as the worker records it.
type outcome uint8

const (
	outcomeCompleted outcome = iota
	outcomeRetried
	outcomeFailed
	outcomeCanceled
	outcomeSnoozed
	outcomeGivenBack
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"completed", "retried", "failed", "canceled", "snoozed", "given_back"}

func (o outcome) String() string { return outcomeNames[o] }

// outcomeOf is the outcome the worker records for an attempt whose chain
// returned err: worker.Outcome, as an index into the instrument's tables.
func outcomeOf(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) outcome {
	switch worker.Outcome(ctx, job, err) {
	case tasuki.EventCompleted:
		return outcomeCompleted
	case tasuki.EventCanceled:
		return outcomeCanceled
	case tasuki.EventSnoozed:
		return outcomeSnoozed
	case tasuki.EventGivenBack:
		return outcomeGivenBack
	case tasuki.EventFailed:
		return outcomeFailed
	default:
		return outcomeRetried
	}
}

// errorType is a failed attempt's error.type: a few words for the causes
// tasuki knows, "_OTHER" for the handler's own errors.
func errorType(ctx context.Context, err error) string {
	var p *worker.PanicError
	var timeout *worker.TimeoutError
	var undecodable *tasuki.PayloadDecodeError
	switch {
	case errors.As(err, &p):
		return "panic"
	case errors.As(context.Cause(ctx), &timeout):
		return "timeout"
	case errors.As(err, &undecodable):
		return "payload_decode"
	}
	return "_OTHER"
}
