package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// ReloadableKeys are the config keys whose change a reload applies: the
// guest cannot see them (logging, the shim's own timeouts, which binary
// runs, and what systemd applies to the socket). A change of any other
// key is refused, since the new virtiofsd would serve the running guest
// differently from the one whose state it loads.
func ReloadableKeys() []string {
	return []string{"FLAVOR", "FRONT", "LOG_LEVEL", "READY_TIMEOUT", "SOCKET_GROUP", "SOCKET_MODE",
		"SOCKET_USER", "STANDBY", "STOP_TIMEOUT", "VIRTIOFSD"}
}

// ReloadRefusal says why a reload cannot apply cfg, the config as it is
// now, to a session started with old: a changed key a reload does not
// apply (see ReloadableKeys; EXTRA_ARGS only when just its --log-level
// differs), named with file:line. nil: it may.
func ReloadRefusal(old, cfg *config.Config) error {
	var errs []error
	reloadable := ReloadableKeys()
	for _, k := range config.Keys() {
		if slices.Contains(reloadable, k) || old.Value(k) == cfg.Value(k) {
			continue
		}
		if k == "EXTRA_ARGS" && slices.Equal(withoutLogLevel(old.ExtraArgs), withoutLogLevel(cfg.ExtraArgs)) {
			continue
		}
		line := cfg.Line(k)
		if line == 0 {
			line = old.Line(k)
		}
		errs = append(errs, fmt.Errorf("%s:%d: %s changed from %q to %q, which the guest would see: a reload applies only %s; restart the VM's session to apply it, or put the line back",
			cfg.Path, line, k, old.Value(k), cfg.Value(k), strings.Join(reloadable, ", ")))
	}
	return errors.Join(errs...)
}

// withoutLogLevel drops virtiofsd's log level arguments from args.
func withoutLogLevel(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--log-level" || a == "-o" && i+1 < len(args) && strings.HasPrefix(args[i+1], "log_level="):
			i++
		case strings.HasPrefix(a, "--log-level="), strings.HasPrefix(a, "-o=log_level="):
		default:
			out = append(out, a)
		}
	}
	return out
}

// swapTimeout bounds a swap once the new virtiofsd is ready.
const swapTimeout = 30 * time.Second

// A reload whose new virtiofsd could not load the state, the old one
// keeping the session, is tried again on a fresh virtiofsd, at most
// reloadTries times in all, reloadRetryWait apart: a find-paths state that
// names a file the guest deleted but still knows cannot be loaded until
// the guest forgets the file, which it does soon after.
const (
	reloadTries     = 3
	reloadRetryWait = time.Second
)

// retryReload tells whether a reload whose try-th swap failed with err
// tries again: only a failed load with the session kept, within
// reloadTries.
func retryReload(err error, try int) bool {
	var se *front.SwapError
	return try < reloadTries && errors.As(err, &se) && se.Kept && se.Step == front.StepLoad
}

// reload swaps a new virtiofsd, of the installed binary and the config as
// it is now, under the session; it runs in Run's loop.
func (s *Session) reload(ctx context.Context) state.ReloadAnswer {
	refuse := func(reason string) state.ReloadAnswer {
		s.Log.WithField("reason", reason).Warn("reload refused: the session goes on as it was")
		return state.ReloadAnswer{Result: state.ReloadRefused, Reason: reason, Kept: true}
	}
	cfg, p, err := s.Instance.Prepare(ctx)
	if err != nil {
		return refuse(err.Error())
	}
	if ok, why := plan.LiveSwap(p); !ok {
		return refuse(why + "; the session goes on with its virtiofsd")
	}
	if s.resumed {
		// A file the restart could not carry fails in the guest already;
		// carried so, it does not block every later reload.
		p = plan.ForResume(p)
	}
	if err := ReloadRefusal(s.Plan.Config, cfg); err != nil {
		return refuse(err.Error())
	}
	if s.front != nil {
		if !s.cur.isReady() {
			return refuse("virtiofsd is still starting (the VM connected before it was ready): retry once it is")
		}
		if st := s.front.Status(); !st.Swappable {
			return refuse(st.Reason)
		}
	}
	tries := 0 // swaps tried
	fail := func(err error, kept bool) state.ReloadAnswer {
		if tries > 1 {
			err = fmt.Errorf("%d tries, each on a fresh virtiofsd, failed; the last: %w", tries, err)
		}
		s.Log.WithError(err).WithFields(logrus.Fields{"kept": kept, "tries": tries}).Error("reload failed")
		return state.ReloadAnswer{Result: state.ReloadFailed, Reason: err.Error(), Kept: kept, Tries: tries}
	}
	var (
		nb  *backend
		res front.SwapResult
		old = s.cur
	)
	var prepared logrus.Fields
	for try := 1; ; try++ {
		// Before the new virtiofsd starts, so that the old one prepares
		// its save while the new one starts and the VM runs.
		ann := s.announceSwap(ctx)
		if nb, err = s.start(ctx, p, true, s.front != nil); err != nil {
			ann.withdraw(ctx)
			return fail(err, true)
		}
		rctx, cancel := context.WithTimeout(ctx, p.ReadyTimeout+time.Second)
		err = nb.waitReady(rctx)
		cancel()
		if err != nil {
			_ = nb.stop()
			ann.withdraw(ctx)
			return fail(fmt.Errorf("the new virtiofsd did not become ready: %w", err), true)
		}
		if s.front == nil {
			// No VM yet: the new virtiofsd waits for it instead.
			oldPID, newPID := int(old.pid.Load()), int(nb.pid.Load())
			s.cur, s.Plan = nb, p
			s.speak(nb)
			_ = old.stop()
			s.publishPID(newPID)
			s.publishBinary(nb)
			s.planMovable(p)
			s.Log.WithFields(logrus.Fields{"old_pid": oldPID, "new_pid": newPID, "new_version": nb.version}).Info(
				"reload: no VM is connected, so the new virtiofsd waits for it instead of the old one")
			return state.ReloadAnswer{Result: state.ReloadOK, Kept: true, OldPID: oldPID, NewPID: newPID}
		}
		tries = try
		prepared = ann.wait(ctx, prepareLimit)
		var crash *respawnRequest
		res, crash, err = s.swap(ctx, nb.conn)
		if err != nil && crash == nil {
			ann.withdraw(ctx) // unless the swap's rollback did
		}
		if err == nil {
			if crash != nil {
				// The new virtiofsd died right after the swap: recovered
				// once it is the current one.
				defer func() { crash.reply <- s.respawn(ctx, *crash) }()
			}
			break
		}
		_ = nb.stop()
		if crash != nil {
			// The old virtiofsd died during the reload: the swap is given
			// up and the crash recovered, on a fresh virtiofsd.
			crash.reply <- s.respawn(ctx, *crash)
			return fail(fmt.Errorf("virtiofsd crashed during the reload, so the swap was given up and a fresh virtiofsd serves the session (degraded): %w", err), true)
		}
		kept := true
		var se *front.SwapError
		if errors.As(err, &se) {
			kept = se.Kept
		}
		if !retryReload(err, try) {
			return fail(err, kept)
		}
		s.Log.WithError(err).WithField("try", try).Warn("reload: the new virtiofsd could not load the state and the old one keeps the session; trying again on a fresh virtiofsd")
		select {
		case <-ctx.Done():
			return fail(err, kept)
		case <-time.After(reloadRetryWait):
		}
	}
	oldPID, newPID := int(old.pid.Load()), int(nb.pid.Load())
	s.cur, s.Plan = nb, p
	s.planMovable(p)
	s.speak(nb)
	s.retire(old)
	s.statusServing()
	s.handover++
	n := s.handover
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) { st.Handovers, st.VirtiofsdPID, st.Virtiofsd = n, newPID, nb.binary })
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	s.Log.WithFields(logrus.Fields{
		"pause": res.Pause.String(), "save": res.Save.String(), "load": res.Load.String(),
		"state_bytes": res.StateSize, "old_pid": oldPID, "new_pid": newPID,
		"old_version": old.version, "new_version": nb.version, "handovers": n, "tries": tries,
	}).WithFields(prepared).Info("reload: virtiofsd swapped under the running VM")
	return state.ReloadAnswer{Result: state.ReloadOK, Kept: true, OldPID: oldPID, NewPID: newPID,
		PauseMillis: ms(res.Pause), SaveMillis: ms(res.Save), LoadMillis: ms(res.Load), StateBytes: res.StateSize, Tries: tries}
}

// swap runs the front's Swap of the new virtiofsd on conn, serving the
// front's Respawn meanwhile. It runs in Run's loop, which serves Respawn:
// when virtiofsd dies during the reload, the front asks for a fresh one
// and cannot take the swap until it has it, so waiting for the swap alone
// stalled the session for swapTimeout, with no WATCHDOG=1 sent (the
// watchdog killed the shim: the kill series, test/systemtest). Then the
// swap is cancelled, and the front's request is returned for the caller
// to answer once s.cur is the virtiofsd that died.
func (s *Session) swap(ctx context.Context, conn *net.UnixConn) (front.SwapResult, *respawnRequest, error) {
	sctx, cancel := context.WithTimeout(ctx, swapTimeout)
	defer cancel()
	type swapped struct {
		res front.SwapResult
		err error
	}
	done := make(chan swapped, 1)
	go func() {
		res, err := s.front.Swap(sctx, conn)
		done <- swapped{res, err}
	}()
	select {
	case r := <-done:
		return r.res, nil, r.err
	case req := <-s.respawns:
		cancel()
		r := <-done
		return r.res, &req, r.err
	}
}

func (s *Session) publishPID(pid int) {
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) { st.VirtiofsdPID = pid })
	}
}

// answer publishes a reload request's answer, numbered.
func (s *Session) answer(a state.ReloadAnswer) { s.Instance.answerReload(a) }
