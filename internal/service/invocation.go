package service

import (
	"context"
	"io"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/handover"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Invocation is one `virtiofsd-shim run`: what its flags say, and the
// process's environment.
type Invocation struct {
	// Instance is --instance; "" when not given (the socket's name then
	// names it).
	Instance string
	// Scope is the service manager the instance belongs to.
	Scope config.Scope
	// Load reads the instance's config with the run's flags applied.
	Load func() (*config.Config, error)
	// Version is the shim's own version, recorded in the state with its
	// program's identity (state.Self).
	Version string
	// Route is where the lines go (logsink.NewRoute).
	Route *logsink.Route
	// Log is the shim's own log, moved to the journal with each session's
	// origin when Route says the journal.
	Log *logsink.ShimLog
	// Signals are the run's (CatchSignals).
	Signals *Signals
	// Stderr takes virtiofsd's lines off the journal.
	Stderr io.Writer
	// Getenv reads the environment systemd set (RUNTIME_DIRECTORY,
	// NOTIFY_SOCKET, XDG_RUNTIME_DIR, ...); nil is os.Getenv.
	Getenv func(string) string
	// Activation is where the socket comes from; nil is
	// activation.FromOS().
	Activation *activation.Environment
}

// Serve runs the invocation: it moves the shim's log to the journal when
// Route says so (so that even a config error reaches it with the
// instance's field), publishes the typed state in the service's
// RuntimeDirectory= (%t/virtiofsd-shim; list, check, release and resume
// read it; a shim run by hand, outside systemd, keeps it in memory), reads
// the config, takes the socket systemd passed, and serves it (Instance.Run)
// until the session ends or the service stops. The state and systemd are
// told how it ended.
func (iv *Invocation) Serve(ctx context.Context) (err error) {
	if iv.Route.Journal {
		iv.Log.ToJournal(iv.Route.Origin)
	}
	getenv := iv.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	rt := state.FromRuntimeDirectory(getenv("RUNTIME_DIRECTORY"))
	var stPath string
	if rt != "" && iv.Instance != "" {
		stPath = state.Path(rt, iv.Instance)
	}
	st := state.NewWriter(stPath, iv.Instance, os.Getpid())
	st.OnError = func(err error) { iv.Log.WithError(err).Warn("cannot publish the instance's state") }
	self, _ := state.Self(iv.Version) // nil: unknown, list claims nothing
	st.Update(func(s *state.State) { s.Shim = self })
	defer func() {
		Finish(st, err, exitcode.For(err))
		NotifyFailure(launch.SystemdNotifier{}, err)
	}()

	in := &Instance{
		State:    st,
		Scope:    iv.Scope,
		Load:     iv.Load,
		Notifier: launch.SystemdNotifier{},
	}
	// Under systemd, RuntimeDirectory=virtiofsd-shim (preserved) keeps the
	// flavor of the binary between sessions; elsewhere each run asks it.
	if rt != "" {
		in.Versions = virtiofsd.VersionCache{Dir: state.Dir(rt)}
	}
	cfg, p, err := in.Prepare(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() != nil {
		iv.Log.Info("stopped before virtiofsd was started")
		return nil
	}

	env := activation.FromOS()
	if iv.Activation != nil {
		env = *iv.Activation
	}
	sock, err := activation.Listen(env)
	if err != nil {
		return err
	}
	defer sock.File.Close()
	instance := cfg.Instance
	if instance == "" {
		instance = config.InstanceOfSocket(sock.Path)
	}
	in.Sink, in.Limits = iv.Route.Sink(instance, iv.Stderr)
	in.Log = iv.Log.WithField("instance", instance)
	in.Release, in.Reloads = iv.Signals.Release, iv.Signals.Reloads
	in.Handover = NewHandover(iv.Scope, logsink.SelfUnitOf(iv.Scope == config.User), getenv)
	if iv.Route.Journal {
		in.OnSession = func(id string) { iv.Log.ToJournal(iv.Route.Session(id)) }
	}
	return in.Run(ctx, cfg, p, sock)
}

// NewHandover keeps a front session across systemctl restart through
// systemd's store (NOTIFY_SOCKET, read with getenv); whether a SIGTERM is a
// restart is asked of the manager of scope about unit, the shim's own,
// only when a session could be kept.
func NewHandover(scope config.Scope, unit string, getenv func(string) string) *Handover {
	return &Handover{
		Store: fdstore.FromEnv(getenv),
		IsRestart: func(ctx context.Context) (bool, error) {
			conn, err := sdbus.Connect(ctx, scope, getenv)
			if err != nil {
				return false, err
			}
			defer conn.Close()
			return handover.IsRestart(ctx, conn, unit)
		},
	}
}
