package service

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
)

// The Rust virtiofsd prepares its save in a thread it starts when F_LOG_ALL
// is set (front.Announce) and ends when the preparation is done; its SAVE
// waits for that thread. A reload waits, before the pause, until the
// serving virtiofsd runs no more threads than before the announce, or
// prepareLimit after the announce (a restart: restartPrepareLimit, within
// its stop's time): the guest's requests are served
// meanwhile, and what is not prepared by then is prepared inside the
// pause, as without an announce. The thread count is only a hint: a
// wrong reading costs pause time, never correctness.
//
// Announce and Withdraw are bounded by announceTimeout: they wait for the
// front's loop, which waits for Run's (this one) while it recovers from a
// crash of virtiofsd; the swap then serves that recovery (Session.swap).
const (
	prepareLimit        = 10 * time.Second
	restartPrepareLimit = 2 * time.Second
	preparePoll         = 2 * time.Millisecond
	announceTimeout     = time.Second
)

// announcement is a reload's announce to the serving virtiofsd.
type announcement struct {
	s        *Session
	at       time.Time
	pids     []int // the serving virtiofsd and its sandboxed child
	baseline int   // their threads before the announce
	on       bool
}

// announceSwap tells the serving virtiofsd that a swap is coming, so that
// it prepares its save while the VM runs. Without a front, or when the
// front refuses, it does nothing (the swap then says why).
func (s *Session) announceSwap(ctx context.Context) *announcement {
	a := &announcement{s: s, at: time.Now()}
	if s.front == nil || s.cur == nil {
		return a
	}
	pid := int(s.cur.pid.Load())
	if pid > 0 {
		a.pids = proctree.Tree(pid)
		a.baseline = proctree.TreeThreads(a.pids)
	}
	actx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	if err := s.front.Announce(actx); err != nil {
		s.Log.WithError(err).Debug("reload: the swap was not announced to virtiofsd; it prepares its save inside the pause")
		return a
	}
	a.on = true
	return a
}

// wait waits until the serving virtiofsd has prepared its save, at most
// until limit after the announce, and returns the handover line's
// fields: how long since the announce, and whether the preparation was
// seen to end.
func (a *announcement) wait(ctx context.Context, limit time.Duration) logrus.Fields {
	if !a.on || len(a.pids) == 0 {
		return logrus.Fields{"prepared": "no announce"}
	}
	ctx, cancel := context.WithDeadline(ctx, a.at.Add(limit))
	defer cancel()
	prepared := proctree.WaitThreads(ctx, a.pids, a.baseline, preparePoll)
	return logrus.Fields{"prepared": prepared, "prepare": time.Since(a.at).Round(time.Millisecond).String()}
}

// withdraw ends the announce when no swap follows (the front does nothing
// when a swap or the VM's own features ended it already).
func (a *announcement) withdraw(ctx context.Context) {
	if !a.on {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	if err := a.s.front.Withdraw(ctx); err != nil {
		a.s.Log.WithError(err).Warn("reload: could not withdraw the swap's announce; virtiofsd keeps recording paths for a save until the next reload")
	}
}
