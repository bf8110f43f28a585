// Package service runs one instance of virtiofsd@.service: its virtiofsd
// on the socket systemd passed, one session or, with STANDBY=yes, one after
// another, with the instance's lines forwarded and the shim's summary logged.
package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
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
		if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
			sv.Watchdog = d / 2
		}
		out, err := sv.RunSession(ctx)
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

// newSessionID names a session in the journal: 128 random bits in hex, like
// systemd's invocation IDs.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
