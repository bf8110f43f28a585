// Package service runs one instance of virtiofsd@.service: its virtiofsd
// on the socket systemd passed, one session or, with STANDBY=yes, one after
// another, with the instance's lines forwarded and the shim's summary logged.
package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Instance is one instance's service, as `virtiofsd-shim run` runs it.
type Instance struct {
	// Scope is the service manager the instance belongs to.
	Scope config.Scope
	// Load reads the instance's config with run's flags applied: before
	// the first session, and again before each standby session.
	Load func() (*config.Config, error)
	// Versions caches the binary's flavor between sessions (or asks it).
	Versions virtiofsd.VersionCache
	// Sink and Limits are where virtiofsd's lines go, and journald's rate
	// limit to respect there (zero: none).
	Sink   logsink.Sink
	Limits logsink.Limits
	// Log is the shim's own log.
	Log *logrus.Entry
	// Notifier tells systemd (sd_notify).
	Notifier launch.Notifier
	// Release is closed when the socket is released (SIGUSR1 from
	// virtiofsd-shim release, the socket's ExecStopPre=).
	Release <-chan struct{}
	// OnSession is told each session's id before it starts (the shim's own
	// entries then carry it); may be nil.
	OnSession func(id string)
	// State publishes the instance's typed state; nil publishes nothing.
	// Run sets every field but the run's end (see Finish).
	State *state.Writer
	// Handover keeps a session across systemctl restart; nil: a SIGTERM
	// always ends the session.
	Handover *Handover
	// Reloads are reload requests (SIGHUP, from virtiofsd-shim reload):
	// each gets an answer in State (state.ReloadAnswer). nil: none come.
	Reloads <-chan struct{}

	reloadMu  sync.Mutex
	reloadSeq int
}

// answerReload numbers a reload request's answer and publishes it.
func (in *Instance) answerReload(a state.ReloadAnswer) {
	in.reloadMu.Lock()
	defer in.reloadMu.Unlock()
	in.reloadSeq++
	a.Seq = in.reloadSeq
	if in.State != nil {
		in.State.Update(func(s *state.State) { s.Reload = &a })
	}
}

// refuseReloads answers every reload request with reason until done is
// closed: a session without the front cannot be swapped.
func (in *Instance) refuseReloads(reason string, done <-chan struct{}) {
	for {
		select {
		case <-in.Reloads:
			in.Log.WithField("reason", reason).Warn("reload refused: the session goes on as it was")
			in.answerReload(state.ReloadAnswer{Result: state.ReloadRefused, Reason: reason, Kept: true})
		case <-done:
			return
		}
	}
}

// Finish publishes how the run ended: phase Ended, or Failed with err and
// its exit code. Only the shim's main function calls it, once, as it
// returns.
func Finish(w *state.Writer, err error, code int) {
	if w == nil {
		return
	}
	w.Update(func(s *state.State) {
		s.VirtiofsdPID = 0
		s.Movable, s.UnmovableReason = false, "the service has ended"
		if err != nil {
			s.Phase = state.Failed
			s.Failure = &state.Failure{Reason: err.Error(), ExitCode: code}
			return
		}
		s.Phase = state.Ended
	})
}

// publish makes the typed state of a supervisor's change.
func publish(w *state.Writer, c launch.Change) {
	w.Update(func(s *state.State) {
		s.VirtiofsdPID = c.PID
		switch {
		case c.Stopping && c.Released && !c.KeepsServing:
			s.Phase = state.Released
		case c.Stopping:
			s.Phase = state.Stopping
		default:
			s.Phase = c.Phase
		}
		switch {
		case c.KeepsServing:
			s.Release = state.KeepsServing
		case c.Released:
			s.Release = state.LetGo
		}
	})
}

// Prepare reads the config and plans virtiofsd's start from it.
func (in *Instance) Prepare(ctx context.Context) (*config.Config, *plan.Plan, error) {
	cfg, err := in.Load()
	if err != nil {
		return nil, nil, err
	}
	p, err := plan.Make(ctx, cfg, in.Scope, in.Versions)
	if err != nil {
		return nil, nil, err
	}
	if p.Rootless {
		if err := plan.CheckIDMapPrivileges(cfg, plan.SelfStatus()); err != nil {
			return nil, nil, err
		}
	}
	return cfg, p, nil
}

// Run serves sock with the plan p made of cfg (Prepare's), until the
// session ends or, with STANDBY=yes, until the socket is released or the
// service stopped.
func (in *Instance) Run(ctx context.Context, cfg *config.Config, p *plan.Plan, sock *activation.Socket) error {
	entry := in.Log
	sink := in.Sink
	if p.Rootless {
		sink = RootlessSink{sink}
		logRootless(entry, p)
	}
	fwd := logsink.NewForwarder(sink, in.Limits, func(err error) {
		entry.WithError(err).Warn("cannot write virtiofsd's lines")
	})
	defer func() {
		forwarded, dropped, suppressed := fwd.Close()
		e := entry.WithFields(logrus.Fields{"lines_forwarded": forwarded, "lines_dropped": dropped, "lines_suppressed": suppressed})
		switch {
		case dropped > 0:
			e.Warn("some virtiofsd lines were dropped because the journal did not keep up")
		case suppressed > 0:
			e.Warn("some virtiofsd lines were not sent: the journal's rate limit would have discarded them")
		default:
			e.Debug("log forwarding done")
		}
	}()
	if ctx.Err() != nil {
		entry.Info("stopped before virtiofsd was started")
		return nil
	}

	// One session, or with STANDBY=yes one after another on the same
	// socket, each virtiofsd started as soon as the last one's client left,
	// with the config read again, until the socket is released or the
	// service stopped.
	if in.lostDirectSession(sock.Stored) {
		err := &ShimKilledError{}
		entry.WithError(err).Error("shim crash: the session without the front is lost")
		if in.Notifier != nil {
			_ = in.Notifier.Notify("STATUS=Failed: " + err.Error())
		}
		return err
	}
	cp := in.takeCheckpoint(sock.Stored)
	cr := in.takeCrashRecord(sock.Stored, cp != nil)
	defer func() {
		if cp != nil {
			cp.Close()
		}
		if cr != nil {
			cr.Close()
		}
	}()
	for n := 1; ; n++ {
		session := newSessionID()
		if in.OnSession != nil {
			in.OnSession(session)
		}
		sv := &launch.Supervisor{
			Path:         p.Binary,
			Args:         p.Args,
			Env:          virtiofsd.ChildEnv(os.Environ(), p.Version.Flavor),
			Flavor:       p.Version.Flavor,
			Socket:       sock.File,
			SocketPath:   sock.String(),
			SharedDir:    cfg.SharedDir,
			Notifier:     in.Notifier,
			Lines:        fwd,
			Log:          entry,
			ReadyTimeout: p.ReadyTimeout,
			StopTimeout:  p.StopTimeout,
			Session:      session,
			Release:      in.Release,
		}
		if cfg.Standby {
			sv.Standby = n
		}
		if w := in.State; w != nil {
			w.Update(func(s *state.State) {
				s.Phase, s.VirtiofsdPID = state.Starting, 0
				s.Session, s.SessionNumber, s.Standby = session, n, cfg.Standby
				s.Socket, s.SharedDir = sock.String(), cfg.SharedDir
				s.Movable, s.UnmovableReason = false, state.UnmovableStarting
				s.Virtiofsd = binaryOf(p)
			})
			sv.Publish = func(c launch.Change) { publish(w, c) }
		}
		if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
			sv.Watchdog = d / 2
		}
		var out launch.Outcome
		var err error
		if ok, why := plan.Front(p); ok {
			fs := &Session{ID: session, Number: n, Standby: cfg.Standby, Sock: sock, Plan: p, Instance: in,
				Lines: fwd, Release: in.Release, Reloads: in.Reloads, Log: entry.WithField("session", session), Watchdog: sv.Watchdog,
				Checkpoint: cp, Crashed: cr}
			cp, cr = nil, nil
			out, err = fs.Run(ctx)
		} else {
			if cp != nil {
				entry.WithField("reason", why).Error("restart: the session the last shim kept cannot be resumed without the front; it is closed, and the VM sees its share disconnected")
				cp.Close()
				cp = nil
			}
			if cr != nil {
				entry.WithField("reason", why).Error("shim crash: the session the killed shim left cannot be resumed without the front; it is closed, and the VM sees its share disconnected")
				in.dropCrashRecord(cr)
				cr = nil
			}
			if in.State != nil {
				in.State.Update(func(s *state.State) {
					s.Front, s.Handovers = false, 0
					s.Movable, s.UnmovableReason = false, why+": a restart or reload would end the VM's session"
				})
			}
			done := make(chan struct{})
			go in.refuseReloads(why+"; the session goes on with its virtiofsd", done)
			unmark := in.markDirect(sv)
			out, err = sv.RunSession(ctx)
			unmark()
			close(done)
		}
		if err != nil || out.Released || ctx.Err() != nil || !out.Served || !cfg.Standby {
			return err
		}
		if cfg, p, err = in.Prepare(ctx); err != nil {
			return err
		}
		if !cfg.Standby {
			entry.Info("the session ended and STANDBY is no longer yes: no virtiofsd waits for the next one")
			return nil
		}
		entry.WithField("session", session).Info("the session ended: starting the next standby virtiofsd")
	}
}

// binaryOf identifies the program p is about to start; nil when it
// cannot be read (its start then fails and says why).
func binaryOf(p *plan.Plan) *state.Binary {
	b, err := state.Identify(p.Binary, p.Version.Number)
	if err != nil {
		return nil
	}
	return b
}

// newSessionID names a session in the journal: 128 random bits in hex, like
// systemd's invocation IDs.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
