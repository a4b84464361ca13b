package testdb

import "github.com/tasukiq/tasuki/db"

// Lease returns p set to lease up to max jobs of one kind of one queue from
// the head of their range, and, when p.Rescue is set without queues, to
// rescue that queue's expired jobs: what a worker handling that one kind
// sends.
func Lease(p db.JobLeaseParams, queue, kind string, max int) db.JobLeaseParams {
	p.HeadQueues, p.HeadKinds, p.HeadLimits = []string{queue}, []string{kind}, []int32{int32(max)}
	p.QueueNames, p.QueueMax = []string{queue}, []int32{int32(max)}
	p.KindNames, p.KindMax = []string{kind}, []int32{int32(max)}
	if p.Rescue && p.RescueQueues == nil {
		p.RescueQueues = []string{queue}
	}
	return p
}
