package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/handover"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// Handover keeps a front session across `systemctl restart` in systemd's
// file descriptor store (docs/live-restart.md).
type Handover struct {
	// Store is systemd's store (fdstore.Notifier).
	Store handover.Store
	// IsRestart says whether the SIGTERM just received is a restart of
	// the shim's unit (handover.IsRestart on systemd's D-Bus API).
	IsRestart func(ctx context.Context) (bool, error)
}

// Bounds of the restart's steps; systemd's TimeoutStopSec= (15 s) is the
// outer one.
const (
	askTimeout  = 3 * time.Second
	saveTimeout = 8 * time.Second
)

// keepForRestart runs at the shim's SIGTERM with a VM connected. When the
// SIGTERM is a restart and the session can be saved, it saves it, keeps it
// in systemd's store for the next shim, and returns true: the front has
// returned (frontDone is drained) and the VM stays connected through the
// store. Otherwise it returns false and the session ends as on a stop. A
// stop pays only the question to systemd, asked only of a session that
// could be saved.
func (s *Session) keepForRestart(frontDone <-chan error) bool {
	h := s.Instance.Handover
	if h == nil || h.IsRestart == nil || h.Store == nil {
		return false
	}
	why := s.front.Status().Reason
	if _, pwhy := plan.LiveSwap(s.Plan); pwhy != "" {
		why = pwhy // a thread pool: a resume is a swap, not known to be safe
	}
	if why != "" {
		s.Log.WithField("reason", why).Info("the service stops or restarts: this session cannot be saved, so it ends and the VM sees its share disconnected")
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
	start := time.Now()
	restart, err := h.IsRestart(ctx)
	cancel()
	asked := time.Since(start)
	if err != nil {
		s.Log.WithError(err).Warn("the service stops: whether it restarts is unknown, so the session ends as on a stop")
		return false
	}
	if !restart {
		s.Log.WithField("asked", asked.String()).Debug("the service stops (not a restart): the session ends")
		return false
	}
	// As a reload does: virtiofsd prepares its save while the VM runs.
	ann := s.announceSwap(context.Background())
	prepared := ann.wait(context.Background(), restartPrepareLimit)
	ctx, cancel = context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	t := time.Now()
	cp, err := s.front.SaveForRestart(ctx)
	if err != nil {
		s.Log.WithError(err).Error("restart: the session could not be saved, so it ends and the VM sees its share disconnected")
		return false
	}
	saved := time.Since(t)
	if ferr := <-frontDone; !errors.Is(ferr, front.ErrSavedForRestart) {
		s.Log.WithError(ferr).Warn("restart: the front ended oddly after the save")
	}
	defer cp.Close() // systemd keeps its own copies
	if err := handover.Save(h.Store, cp); err != nil {
		s.Log.WithError(err).Error("restart: the session could not be kept in systemd's fd store, so the VM sees its share disconnected")
		return true
	}
	s.Log.WithFields(logrus.Fields{
		"asked": asked.String(), "saved": saved.String(), "state_bytes": cp.StateSize(),
		"virtiofsd_pid": s.cur.pid.Load(), "version": s.cur.version, "handovers": s.handover + 1,
		"fds": len(cp.Named()),
	}).WithFields(prepared).Info("restart: the session is kept in systemd's fd store for the next shim, the VM stays connected")
	return true
}

// takeCheckpoint finds a session kept by the last shim among the
// descriptors systemd passed beside the socket. A broken or partial one
// is closed (the VM sees its share disconnected, as without the front)
// with one journal line, and the socket is served as usual.
func (in *Instance) takeCheckpoint(stored []*os.File) *front.Checkpoint {
	if len(stored) == 0 {
		return nil
	}
	var st handover.Store = discardStore{}
	if in.Handover != nil && in.Handover.Store != nil {
		st = in.Handover.Store
	}
	cp, err := handover.Take(st, stored)
	if err != nil {
		if cp == nil {
			in.Log.WithError(err).Error("restart: the session the last shim kept cannot be resumed; it is closed, and the socket is served as usual")
			return nil
		}
		in.Log.WithError(err).Warn("restart: the session the last shim kept is resumed, but systemd's store still holds copies of it")
	}
	return cp
}

// resumeKept resumes on the current virtiofsd, fresh and ready, the
// session the last shim left: a restart's checkpoint, or a killed shim's
// crash record. It returns the front and what to tell systemd and the
// state once the VM is served again; or nil, having logged why the VM sees
// its share disconnected.
func (s *Session) resumeKept(ctx context.Context) (*front.Front, func()) {
	in := s.Instance
	if cr := s.Crashed; cr != nil {
		s.Crashed = nil
		f, err := s.resumeAfterCrash(ctx, cr)
		if err != nil {
			s.Log.WithError(err).Error("shim crash: the session the killed shim left is closed, and the VM sees its share disconnected; the socket is served as usual")
			return nil, nil
		}
		return f, func() {
			s.lastEnd = "the shim was killed"
			s.freshPID.Store(s.cur.pid.Load())
			s.publishPID(int(s.cur.pid.Load()))
			if in.Notifier != nil {
				_ = in.Notifier.Notify("READY=1")
			}
			s.recovered(f.Status().LastRecovery) // degraded: the state, the journal, STATUS=
		}
	}
	cp := s.Checkpoint
	s.Checkpoint = nil
	f, err := s.resume(ctx, cp)
	if err != nil {
		s.Log.WithError(err).Error("restart: the session the last shim kept is closed, and the VM sees its share disconnected; the socket is served as usual")
		return nil, nil
	}
	return f, func() {
		if in.Notifier != nil {
			_ = in.Notifier.Notify("READY=1\n" + launch.ServingStatus(s.Sock.String(), s.Plan.Config.SharedDir, int(s.cur.pid.Load())) +
				", resumed after a restart")
		}
	}
}

// resume continues the session the last shim kept on b, a fresh virtiofsd
// that is ready: the VM is served again from here. It returns the front,
// or the error that closed the checkpoint.
func (s *Session) resume(ctx context.Context, cp *front.Checkpoint) (*front.Front, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), front.ResumeTimeout)
	defer cancel()
	t := time.Now()
	size := cp.StateSize()
	f, err := front.Resume(rctx, cp, s.cur.conn, s.frontConfig(ctx))
	if err != nil {
		return nil, fmt.Errorf("restart: resume the session the last shim kept: %w", err)
	}
	st := f.Status()
	s.resumed = true
	s.handover = st.Swaps // the restart counts as one
	s.Log.WithFields(logrus.Fields{
		"resumed": time.Since(t).String(), "state_bytes": size, "virtiofsd_pid": s.cur.pid.Load(),
		"version": s.cur.version, "handovers": st.Swaps,
	}).Info("restart: the session the last shim kept is resumed on a fresh virtiofsd")
	if w := s.Instance.State; w != nil {
		pid := int(s.cur.pid.Load())
		w.Update(func(x *state.State) { x.Phase, x.VirtiofsdPID, x.Handovers = state.Serving, pid, st.Swaps })
	}
	return f, nil
}

// takeCrashRecord finds a session a killed shim left among the descriptors
// systemd passed beside the socket (docs/live-restart.md, "A shim
// crash"). A restart's checkpoint, when there is one too, is newer: the
// record is then closed and dropped from the store. A broken record is
// closed and dropped with one journal line, and the socket is served as
// usual. A record that loaded stays in the store: the resumed session
// goes on keeping it there.
func (in *Instance) takeCrashRecord(stored []*os.File, checkpoint bool) *front.CrashRecord {
	if len(stored) == 0 {
		return nil
	}
	byName := fdstore.ByName(stored)
	r, err := front.LoadCrashRecord(byName)
	if r == nil && err == nil {
		return nil
	}
	st := in.store()
	if checkpoint && r != nil {
		r.Drop(st)
		r, err = nil, nil
	}
	if r == nil {
		for name := range byName {
			if front.IsCrashName(name) {
				_, _ = st.Remove(name)
			}
		}
		if err != nil {
			in.Log.WithError(err).Error("shim crash: the session the killed shim left cannot be resumed; it is closed, and the socket is served as usual")
		}
		return nil
	}
	return r
}

// resumeAfterCrash continues the session a killed shim left on the
// current virtiofsd, fresh and ready: degraded, as after a virtiofsd
// crash. It returns the front, or the error that closed the record.
func (s *Session) resumeAfterCrash(ctx context.Context, r *front.CrashRecord) (*front.Front, error) {
	pending := r.Requests()
	f, rec, err := front.ResumeAfterCrash(context.WithoutCancel(ctx), r, s.cur.conn, s.frontConfig(ctx))
	if err != nil {
		r.Drop(s.Instance.store()) // closed already; its names leave the store
		return nil, fmt.Errorf("shim crash: %w", err)
	}
	s.Log.WithFields(logrus.Fields{
		"resumed": rec.Took.String(), "answered": rec.Answered, "awaiting_reply": pending, "virtiofsd_pid": s.cur.pid.Load(),
	}).Warn("shim crash: the session the killed shim left in systemd's fd store is resumed on a fresh virtiofsd")
	return f, nil
}

// dropCrashRecord removes a record that cannot be resumed from the store.
func (in *Instance) dropCrashRecord(r *front.CrashRecord) { r.Drop(in.store()) }

// store is systemd's store, or one that drops everything outside systemd.
func (in *Instance) store() handover.Store {
	if in.Handover != nil && in.Handover.Store != nil {
		return in.Handover.Store
	}
	return discardStore{}
}

// discardStore stands for systemd's store outside systemd: nothing to drop.
type discardStore struct{}

func (discardStore) Store(string, ...*os.File) (bool, error) { return false, nil }
func (discardStore) Remove(string) (bool, error)             { return false, nil }
