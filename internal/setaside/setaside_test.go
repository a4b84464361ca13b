package setaside

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestSet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(time.Second, 3*time.Second)
	assert.NotNil(t, s.Skip(t0), "never nil: SQL would read NULL")
	assert.Empty(t, s.Skip(t0))

	assert.Equal(t, time.Second, s.Refuse(7, t0))
	assert.Equal(t, []int64{7}, s.Skip(t0))
	assert.Empty(t, s.Skip(t0.Add(time.Second)), "tried again once its wait is over")

	assert.Equal(t, 2*time.Second, s.Refuse(7, t0.Add(time.Second)), "the wait doubles")
	assert.Equal(t, 3*time.Second, s.Refuse(7, t0.Add(3*time.Second)), "up to the cap")
	assert.Equal(t, 3*time.Second, s.Refuse(7, t0.Add(6*time.Second)))

	s.Refuse(8, t0.Add(6*time.Second)) // until 7s; 7 waits until 9s
	s.ForgetStale(t0.Add(9 * time.Second))
	assert.Equal(t, 2, s.Len(), "a job whose wait just ended is remembered, so its next wait doubles")
	s.ForgetStale(t0.Add(10*time.Second + time.Millisecond))
	assert.Equal(t, 1, s.Len(), "8 was not refused again for longer than the longest wait: forgotten")
	s.Accepted(7)
	assert.Zero(t, s.Len())
}
