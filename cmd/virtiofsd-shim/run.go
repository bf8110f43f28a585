package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	ho "github.com/virtiofsd-shim/virtiofsd-shim/internal/handover"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/service"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

const runUsage = `Usage: virtiofsd-shim run [flags] [-- virtiofsd-args...]

Runs virtiofsd on the listening socket systemd passes (LISTEN_FDS), as fd 3.
Tells systemd READY=1 once virtiofsd prints "Waiting for vhost-user socket
connection...", forwards each of its lines to the journal (SYSLOG_IDENTIFIER=
virtiofsd, VIRTIOFSD_INSTANCE, VIRTIOFSD_PID, PRIORITY), and on SIGTERM stops
it: SIGTERM, a grace period, then SIGKILL. Flags override the config file.
Arguments after -- go to virtiofsd as they are (after the EXTRA_ARGS of the
config), except those that would break the contract (--fd, --socket-path,
--syslog, --daemonize, a second shared directory, a level hiding readiness).

Examples:
  # What virtiofsd@vm1.service runs; config in /etc/virtiofsd/vm1.conf:
  virtiofsd-shim run --instance=vm1

  # By hand, with the socket from systemd-socket-activate and no config file:
  systemd-socket-activate -l /run/virtiofsd/vm1.sock \
      virtiofsd-shim run --shared-dir=/srv/vm1 --cache=never

  # Extra virtiofsd arguments:
  virtiofsd-shim run --instance=vm1 -- --modcaps=-mknod

  # What the user unit virtiofsd@vm1.service runs (systemctl --user); config
  # in ~/.config/virtiofsd/vm1.conf, the Rust virtiofsd without root:
  virtiofsd-shim run --user --instance=vm1
`

func runCmd(ctx context.Context, args []string, stderr io.Writer, log *logger, usr1 <-chan os.Signal) (err error) {
	if usr1 == nil { // not from main (a test): catch SIGUSR1 from here on
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1)
		defer signal.Stop(c)
		usr1 = c
	}
	// SIGUSR1 is the socket's release (virtiofsd-shim release, its
	// ExecStopPre=): see launch.Supervisor.Release. One that came before
	// the session exists is remembered: the session sees the channel
	// closed as it starts, and decides then.
	release, runDone := make(chan struct{}), make(chan struct{})
	defer close(runDone)
	go func() {
		select {
		case <-usr1:
			close(release)
		case <-runDone:
		}
	}()
	// A stop (SIGTERM from systemctl stop) can come at any moment, even
	// before virtiofsd runs: caught from here on, it ends the shim with 0
	// instead of killing it.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is a reload request (virtiofsd-shim reload, the service's
	// ExecReload=), answered in the typed state; it no longer stops the
	// shim. The reload client signals only a shim that has published its
	// state, which happens below, after this.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	reloads := make(chan struct{})
	go func() {
		for {
			select {
			case <-hups:
				select {
				case reloads <- struct{}{}:
				case <-runDone:
					return
				}
			case <-runDone:
				return
			}
		}
	}()
	fs := newFlagSet("run", runUsage, stderr)
	var inst instanceFlags
	inst.register(fs, true)
	logTarget := fs.String("log-target", "auto", "where virtiofsd's lines go: `auto` (the journal under systemd, else stderr), journal or stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// Decide where lines go first, so that even a config error reaches the
	// journal as an entry with the instance's field.
	toJournal := *logTarget == "journal" || (*logTarget == "auto" && underJournal())
	switch *logTarget {
	case "auto", "journal", "stderr":
	default:
		return usageErrorf("run: --log-target=%s: want auto, journal or stderr", *logTarget)
	}
	// The instance may still be unknown here (--instance is optional); the
	// unit is this process's and does not change.
	origin := logsink.Origin{Instance: inst.instance}
	if toJournal {
		// journalctl honours OBJECT_SYSTEMD_UNIT from root only; a user
		// instance names its unit in USER_UNIT, which journalctl --user -u
		// matches in entries of the user's own uid.
		if inst.user {
			origin.UserUnit = logsink.SelfUserUnit()
		} else {
			origin.Unit = logsink.SelfUnit()
		}
		log.toJournal(origin)
	}

	// The typed state (internal/state), in the service's RuntimeDirectory=
	// (%t/virtiofsd-shim): list, check, release and resume read it. A shim
	// run by hand, outside systemd, keeps it in memory.
	// systemd names that folder, state.Dir(%t), in RUNTIME_DIRECTORY.
	var stPath string
	if dir := os.Getenv("RUNTIME_DIRECTORY"); dir != "" && inst.instance != "" {
		stPath = state.Path(filepath.Dir(strings.Split(dir, ":")[0]), inst.instance)
	}
	st := state.NewWriter(stPath, inst.instance, os.Getpid())
	st.OnError = func(err error) { log.WithError(err).Warn("cannot publish the instance's state") }
	st.Update(func(*state.State) {})
	defer func() {
		service.Finish(st, err, exitcode.For(err))
		service.NotifyFailure(launch.SystemdNotifier{}, err)
	}()

	in := &service.Instance{
		State: st,
		Scope: inst.scope(),
		Load: func() (*config.Config, error) {
			cfg, err := inst.load(fs)
			if err != nil {
				return nil, err
			}
			cfg.ExtraArgs = append(cfg.ExtraArgs, fs.Args()...)
			return cfg, nil
		},
		// Under systemd, RuntimeDirectory=virtiofsd-shim (preserved) keeps
		// the flavor of the binary between sessions; elsewhere each run
		// asks it.
		Versions: virtiofsd.VersionCache{Dir: os.Getenv("RUNTIME_DIRECTORY")},
		Notifier: launch.SystemdNotifier{},
	}
	cfg, p, err := in.Prepare(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() != nil {
		log.Info("stopped before virtiofsd was started")
		return nil
	}

	sock, err := activation.Listen(activation.FromOS())
	if err != nil {
		return err
	}
	defer sock.File.Close()
	instance := cfg.Instance
	if instance == "" {
		instance = strings.TrimSuffix(filepath.Base(sock.Path), ".sock")
	}
	var sink logsink.Sink = logsink.TextSink{W: stderr}
	var limits logsink.Limits
	if toJournal {
		origin.Instance = instance
		sink = logsink.JournalSink{Origin: origin}
		// Lines journald would discard (its per-unit rate limit) are not
		// sent: counted, and reported as journald reports them.
		limits = logsink.JournaldLimits("/")
	}
	entry := log.WithField("instance", instance)
	in.Sink, in.Limits, in.Log = sink, limits, entry
	in.Release, in.Reloads = release, reloads
	in.Handover = handover(inst.scope(), inst.user)
	if toJournal {
		in.OnSession = func(id string) {
			origin.Session = id
			log.toJournal(origin)
		}
	}
	return in.Run(ctx, cfg, p, sock)
}

// handover keeps a front session across systemctl restart through
// systemd's store; whether a SIGTERM is a restart is asked of the manager
// of scope, about the shim's own unit, only when a session could be kept.
func handover(scope config.Scope, user bool) *service.Handover {
	unit := logsink.SelfUnit()
	if user {
		unit = logsink.SelfUserUnit()
	}
	return &service.Handover{
		Store: fdstore.FromEnv(os.Getenv),
		IsRestart: func(ctx context.Context) (bool, error) {
			conn, err := sdbus.Connect(ctx, scope, os.Getenv)
			if err != nil {
				return false, err
			}
			defer conn.Close()
			return ho.IsRestart(ctx, conn, unit)
		},
	}
}
