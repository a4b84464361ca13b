// Package tasukiotel traces and measures tasuki's jobs with OpenTelemetry.
//
// One [Instrumentation], made by [New], gives three things:
//
//   - [Instrumentation.InsertMiddleware], for tasuki.ClientConfig (and
//     worker.Config, for periodic jobs): a PRODUCER span "send {queue}"
//     around each insert call, whose trace context it writes into every
//     inserted job's metadata, and the counter tasuki.jobs.inserted.
//   - [Instrumentation.Middleware], for worker.Config: a CONSUMER span
//     "process {queue}" around each attempt, a child of the insert's span
//     and linked to it, so that a job's work shows in the trace of the
//     request that asked for it; the counter tasuki.jobs.finished and the
//     histogram tasuki.job.duration, by outcome.
//   - [Instrumentation.RegisterQueueMetrics]: the gauges tasuki.queue.depth
//     and tasuki.queue.oldest_runnable_age, read from tasuki.Admin.Depths
//     when the metric reader collects.
//
// Spans follow OpenTelemetry's messaging semantic conventions, with
// messaging.system "tasuki" and the queue as the destination. The trace
// context travels in the job's metadata, under Config.MetadataKey ("otel"
// by default), as the propagator's fields: traceparent, tracestate and,
// with a baggage propagator, baggage.
//
// The package lives in a module of its own, so that tasuki's core does not
// depend on OpenTelemetry.
package tasukiotel
