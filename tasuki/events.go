package tasuki

import (
	"sync"
	"sync/atomic"
	"time"
)

// EventType says what happened to a job.
type EventType string

// The events a process reports about the jobs it touches.
const (
	// EventInserted: a client or inserter of the process inserted the job
	// (for InsertTx and InsertManyTx: when the insert ran, before the
	// caller's transaction committed, which may still roll it back). A
	// unique insert that found its job existing reports nothing.
	EventInserted EventType = "inserted"
	// EventCompleted: the handler returned nil and the completion was
	// recorded.
	EventCompleted EventType = "completed"
	// EventFailed: the attempt failed and the job has no attempts left, or
	// its payload did not decode: it is failed for good.
	EventFailed EventType = "failed"
	// EventRetried: the attempt failed and the job will be retried.
	EventRetried EventType = "retried"
	// EventSnoozed: the handler snoozed the job (see Snooze).
	EventSnoozed EventType = "snoozed"
	// EventCanceled: the handler canceled the job (see Cancel).
	EventCanceled EventType = "canceled"
	// EventGivenBack: the worker shut down before the handler finished; the
	// job went back to pending with its attempt given back.
	EventGivenBack EventType = "given_back"
	// EventRescued: the worker leased a job whose previous attempt was
	// lost: that attempt's worker stopped renewing its lease (it crashed,
	// hung or lost its connection) and the job was rescued. Published when
	// the job is leased again, before it runs, by the process that runs
	// it; Attempt is the attempt that was lost. A job rescued with no
	// attempts left fails without being leased, and publishes nothing.
	EventRescued EventType = "rescued"
)

// Event is something that happened to a job, as a subscription delivers
// it.
type Event struct {
	// Type says what happened.
	Type EventType
	// JobID is the job; 0 for jobs inserted by one COPY (InsertMany),
	// which reports no ids.
	JobID int64
	// Kind and Queue are the job's.
	Kind, Queue string
	// Attempt is the attempt that ended, counting from 1; 0 for
	// EventInserted.
	Attempt int
	// Duration is how long the handler ran; 0 for EventInserted.
	Duration time.Duration
	// Err is what the handler returned, for EventFailed, EventRetried,
	// EventSnoozed and EventCanceled; nil otherwise.
	Err error
	// At is when the event happened, by this process's clock.
	At time.Time
	// Missed is how many events this subscription lost just before this
	// one because its channel was full.
	Missed uint64
}

// Events delivers what happens to jobs to the process's subscribers. Give
// the same *Events to the process's clients (ClientConfig.Events) and
// worker (worker.Config.Events) to see all of it in one place. Delivery
// never blocks the one who publishes: a subscriber whose channel is full
// loses the event, counts it, and learns of it by the Missed field of the
// next event it gets. With no subscriber, publishing costs one atomic
// load. The zero value is not usable: create it with NewEvents. It is safe
// for concurrent use.
type Events struct {
	mu   sync.Mutex // serialises Subscribe and Close
	subs atomic.Pointer[[]*Subscription]
}

// NewEvents returns an Events without subscribers.
func NewEvents() *Events { return &Events{} }

// DefaultEventBuffer is the channel size Subscribe uses for a size of 0.
const DefaultEventBuffer = 1024

// Subscription receives events until it is closed. Read them from C.
type Subscription struct {
	// C delivers the events, in the order each publisher published them.
	// It is closed by Close.
	C <-chan Event

	c       chan Event
	events  *Events
	types   map[EventType]bool // nil: every type
	missed  atomic.Uint64      // lost since the last delivered event
	dropped atomic.Uint64      // lost in all
	// mu orders sends against Close, which closes c: a send to a closed
	// channel would panic in the publisher.
	mu     sync.RWMutex
	closed bool
}

// Subscribe returns a subscription to the events of the given types; to
// every type when none is given. size is its channel's capacity: how many
// events it holds before it loses some. 0 means DefaultEventBuffer.
func (e *Events) Subscribe(size int, types ...EventType) *Subscription {
	if size <= 0 {
		size = DefaultEventBuffer
	}
	c := make(chan Event, size)
	s := &Subscription{C: c, c: c, events: e}
	if len(types) > 0 {
		s.types = make(map[EventType]bool, len(types))
		for _, t := range types {
			s.types[t] = true
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var subs []*Subscription
	if old := e.subs.Load(); old != nil {
		subs = append(subs, *old...)
	}
	subs = append(subs, s)
	e.subs.Store(&subs)
	return s
}

// Dropped returns how many events the subscription lost in all because
// its channel was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes C. Events published after it
// returns are not delivered. Calling it again does nothing.
func (s *Subscription) Close() {
	e := s.events
	e.mu.Lock()
	if old := e.subs.Load(); old != nil {
		subs := make([]*Subscription, 0, len(*old))
		for _, o := range *old {
			if o != s {
				subs = append(subs, o)
			}
		}
		e.subs.Store(&subs)
	}
	e.mu.Unlock()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.c)
	}
	s.mu.Unlock()
}

// Active reports whether anyone subscribed: publishers skip building
// events nobody reads. A nil *Events has no subscribers.
func (e *Events) Active() bool {
	if e == nil {
		return false
	}
	subs := e.subs.Load()
	return subs != nil && len(*subs) > 0
}

// Publish delivers ev to every subscription that takes its type, without
// waiting: a subscription whose channel is full loses it. tasuki's clients
// and workers call it; an application may publish events of its own. A
// zero At is set to now. Publishing to a nil *Events does nothing.
func (e *Events) Publish(ev Event) {
	if e == nil {
		return
	}
	subs := e.subs.Load()
	if subs == nil || len(*subs) == 0 {
		return
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	for _, s := range *subs {
		s.deliver(ev)
	}
}

func (s *Subscription) deliver(ev Event) {
	if s.types != nil && !s.types[ev.Type] {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	ev.Missed = s.missed.Swap(0)
	select {
	case s.c <- ev:
	default:
		s.missed.Add(ev.Missed + 1)
		s.dropped.Add(1)
	}
}
