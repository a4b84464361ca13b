// Package setaside remembers the jobs the database refused to change for
// their own data (an application's trigger, constraint or foreign key), so
// that tasuki's batch statements leave them out for a while instead of
// failing whole, and tries them again later on a backoff. One refused row
// then never stops the rest of its queue.
package setaside

import (
	"sync"
	"time"
)

// DefaultMaxWait caps the wait before a refused job is tried again.
const DefaultMaxWait = 10 * time.Minute

// Set is the jobs set aside. The zero value is not usable; use New. A Set
// is safe for concurrent use.
type Set struct {
	first, max time.Duration
	mu         sync.Mutex
	jobs       map[int64]*entry
}

type entry struct {
	until time.Time
	wait  time.Duration
}

// New returns an empty set whose first wait is first, doubling with each
// refusal of the same job up to max.
func New(first, max time.Duration) *Set {
	return &Set{first: first, max: max, jobs: make(map[int64]*entry)}
}

// Skip returns the jobs whose wait is not over at now: the ones to leave
// out. It never returns nil, as a nil slice reaches SQL as NULL.
func (s *Set) Skip(now time.Time) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int64, 0, len(s.jobs))
	for id, e := range s.jobs {
		if now.Before(e.until) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Due returns the jobs whose wait is over at now: the ones to try again.
func (s *Set) Due(now time.Time) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []int64
	for id, e := range s.jobs {
		if !now.Before(e.until) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Refuse records that the database refused to change job id at now, and
// returns how long it is set aside: the first wait, or twice the last one.
func (s *Set) Refuse(id int64, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.jobs[id]
	if e == nil {
		e = &entry{wait: s.first}
		s.jobs[id] = e
	} else {
		e.wait = min(2*e.wait, s.max)
	}
	e.until = now.Add(e.wait)
	return e.wait
}

// Accepted records that the database accepted a change to job id.
func (s *Set) Accepted(id int64) {
	s.mu.Lock()
	delete(s.jobs, id)
	s.mu.Unlock()
}

// ForgetStale forgets the jobs whose wait has been over for longer than
// the longest wait: they were not refused again when tried (accepted,
// or gone, or no longer qualifying), so the set does not grow for the life
// of the process. A job refused again is remembered, and its wait doubles.
func (s *Set) ForgetStale(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.jobs {
		if now.Sub(e.until) > s.max {
			delete(s.jobs, id)
		}
	}
}

// Len is how many jobs the set holds, whether their wait is over or not.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}
