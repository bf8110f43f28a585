package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// CrashLoopError is a session given up because virtiofsd crashed
// plan.CrashLimit times within plan.CrashWindow: the VM's connection is closed, and
// the guest's share waits until the VM restarts.
type CrashLoopError struct {
	Crashes int
	Last    string // how the last virtiofsd ended
}

func (e *CrashLoopError) Error() string {
	return fmt.Sprintf("virtiofsd crashed %d times within %s (the last: %s), so the shim gave up and closed the VM's connection: "+
		"the guest's share waits until the VM restarts; fix what kills virtiofsd (see its lines in the journal), then restart the VM",
		e.Crashes, plan.CrashWindow, e.Last)
}

// ExitCode is the shim's exit status for a crash loop.
func (e *CrashLoopError) ExitCode() int { return exitcode.CrashLoop }

// errNotReady refuses the front a fresh virtiofsd when the one that died
// under it never was ready (crashed says why).
var errNotReady = errors.New("virtiofsd ended before it was ready")

// notReady says, once, that the VM connected before virtiofsd was ready
// and loses its connection: in Run's loop.
func (s *Session) notReady() {
	if s.toldNotReady {
		return
	}
	s.toldNotReady = true
	s.Log.Warn("virtiofsd ended before it was ready, with the VM already connected: the VM's connection is closed, and its device setup fails")
}

// respawnRequest is the front's call for a fresh virtiofsd, served in
// Run's loop.
type respawnRequest struct {
	cause error
	reply chan respawnReply
}

type respawnReply struct {
	conn *net.UnixConn
	err  error
}

// crashes counts a session's virtiofsd crashes in the bound's window.
type crashes struct {
	times []time.Time
}

// add records a crash at now and tells whether the bound is passed.
func (c *crashes) add(now time.Time) (n int, over bool) {
	keep := c.times[:0]
	for _, t := range c.times {
		if now.Sub(t) < plan.CrashWindow {
			keep = append(keep, t)
		}
	}
	c.times = append(keep, now)
	return len(c.times), len(c.times) >= plan.CrashLimit
}

// frontConfig is the front's config for the session: crashes of virtiofsd
// are recovered through Run's loop (respawn), unless its plan runs a
// thread pool (the front refuses then, with the reason).
func (s *Session) frontConfig(ctx context.Context) front.Config {
	var store front.Store
	if h := s.Instance.Handover; h != nil && h.Store != nil {
		store = h.Store
	}
	return front.Config{
		Journal: store,
		JournalFailed: func(err error) {
			e := s.Log.WithError(err)
			if errors.Is(err, front.ErrNoStore) {
				e.Info("not run by systemd: a crash of the shim would disconnect the VM's share")
				return
			}
			e.Warn("the session cannot be kept in systemd's fd store as it runs: it goes on, but a crash of the shim would disconnect the VM's share")
		},
		ThreadPool: plan.ThreadPool(s.Plan),
		Swappable:  s.frontSwappable,
		Respawn: func(rctx context.Context, cause error) (*net.UnixConn, error) {
			req := respawnRequest{cause: cause, reply: make(chan respawnReply, 1)}
			select {
			case s.respawns <- req:
			case <-rctx.Done():
				return nil, rctx.Err()
			}
			select {
			case r := <-req.reply:
				return r.conn, r.err
			case <-rctx.Done():
				return nil, rctx.Err()
			}
		},
		Recovered: func(rec front.Recovery) { s.recovered(rec) },
	}
}

// curDone is the current backend's end, nil once it crashed under the VM
// (the front recovers then, or ends the session).
func (s *Session) curDone() <-chan error {
	if s.cur.crashed {
		return nil
	}
	return s.cur.done
}

// crashed tells whether err, virtiofsd's end while the VM is connected,
// is a crash the front may recover from: any end but a clean one (the VM
// leaving makes virtiofsd exit 0) of a virtiofsd that was ready. One that
// fails before it is ready fails its session as it would without a VM:
// a fresh one would fail alike. It puts err back for ended.
func (s *Session) crashed(err error) bool {
	if s.front == nil || err == nil || s.cur.outcome.Released {
		return false
	}
	if !s.cur.isReady() {
		s.notReady()
		return false
	}
	s.cur.done <- err
	s.cur.crashed = true
	return true
}

// respawn starts a fresh virtiofsd of the current plan for the front,
// after the current one died: in Run's loop. A fresh one that ends before
// it is ready counts as one more crash, and the next is tried, up to the
// bound.
func (s *Session) respawn(ctx context.Context, req respawnRequest) respawnReply {
	if !s.cur.isReady() {
		s.notReady()
		return respawnReply{err: errNotReady}
	}
	pid, end := s.cur.pid.Load(), s.endOf(s.cur)
	cause := req.cause
	for {
		s.lastEnd = end
		n, over := s.crashCount.add(time.Now())
		log := s.Log.WithFields(logrus.Fields{"virtiofsd_pid": pid, "ended": end, "crashes": n})
		if over {
			err := &CrashLoopError{Crashes: n, Last: end}
			log.WithError(err).Error("virtiofsd crashed too often: the shim gives up")
			return respawnReply{err: err}
		}
		log.WithError(cause).Warn("virtiofsd ended under the connected VM: starting a fresh one")
		nb, err := s.start(ctx, s.Plan, true, true)
		if err != nil {
			return respawnReply{err: err}
		}
		rctx, cancel := context.WithTimeout(ctx, s.Plan.ReadyTimeout+time.Second)
		err = nb.waitReady(rctx)
		cancel()
		if err != nil {
			pid, end, cause = nb.pid.Load(), s.endOf(nb), fmt.Errorf("the fresh virtiofsd did not become ready: %w", err)
			continue
		}
		s.cur = nb
		s.speak(nb)
		s.publishPID(int(nb.pid.Load()))
		s.publishBinary(nb)
		s.freshPID.Store(nb.pid.Load())
		return respawnReply{conn: nb.conn}
	}
}

// endOf waits for b, which died or lost its connection, and says how it
// ended ("signal 9 (SIGKILL)", "exit status 1").
func (s *Session) endOf(b *backend) string {
	b.quiet.Store(true)
	var err error
	select {
	case err = <-b.done:
		b.done <- err
	case <-time.After(config.DefaultStopTimeout):
		err = b.stop()
	}
	var ee *launch.ExitError
	switch {
	case errors.As(err, &ee):
		if sig, ok := ee.Signal(); ok {
			return "signal " + exitcode.SignalName(int(sig))
		}
		return fmt.Sprintf("exit status %d", ee.Status.ExitStatus())
	case err != nil:
		return err.Error()
	}
	return "exit status 0"
}

// recovered marks the session degraded after the front recovered it.
func (s *Session) recovered(rec front.Recovery) {
	s.recoveries++
	n, end, pid := s.recoveries, s.lastEnd, s.freshPID.Load()
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) {
			st.Phase, st.Failure = state.Serving, nil
			st.Degraded = &state.Degraded{Recoveries: n, LastEnd: end, Since: time.Now()}
		})
	}
	s.Log.WithFields(logrus.Fields{"recoveries": n, "ended": end, "took": rec.Took.String(),
		"answered": rec.Answered, "virtiofsd_pid": pid}).Warn(
		"degraded: virtiofsd crashed and a fresh one serves the VM without its FUSE state, so the guest's requests on the share fail with EBADF: " +
			"in the guest, close everything open on the share, then umount and mount it again")
	if nt := s.Instance.Notifier; nt != nil {
		_ = nt.Notify(fmt.Sprintf("STATUS=Degraded: virtiofsd crashed (%s; %d recoveries), the guest must umount and mount %s's share again; serving on %s (virtiofsd pid %d)",
			end, n, s.Plan.Config.SharedDir, s.Sock, pid))
	}
}

// gaveUp is the session's end when the front could not recover from a
// crash: the journal and STATUS= say so.
func (s *Session) gaveUp(rerr *front.RecoveryError) error {
	var cl *CrashLoopError
	if errors.As(rerr, &cl) {
		if nt := s.Instance.Notifier; nt != nil {
			_ = nt.Notify("STATUS=Failed: " + cl.Error())
		}
		return cl
	}
	s.Log.WithError(rerr).Error("virtiofsd ended under the connected VM and the session cannot be recovered: the VM's connection is closed")
	return nil
}
