package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
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

func runCmd(ctx context.Context, args []string, stderr io.Writer, log *logger) error {
	// First: SIGUSR1's default action would kill the shim.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	// A stop (SIGTERM from systemctl stop) can come at any moment, even
	// before virtiofsd runs: caught from here on, it ends the shim with 0
	// instead of killing it.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
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

	cfg, p, err := prepareRun(ctx, &inst, fs)
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
	if p.rootless {
		sink = rootlessSink{sink}
		logRootless(entry, p)
	}

	fwd := logsink.NewForwarder(sink, limits, func(err error) {
		entry.WithError(err).Warn("cannot write virtiofsd's lines")
	})
	defer func() {
		forwarded, dropped, suppressed := fwd.Close()
		e := entry.WithFields(map[string]any{"lines_forwarded": forwarded, "lines_dropped": dropped, "lines_suppressed": suppressed})
		switch {
		case dropped > 0:
			e.Warn("some virtiofsd lines were dropped because the journal did not keep up")
		case suppressed > 0:
			e.Warn("some virtiofsd lines were not sent: the journal's rate limit would have discarded them")
		default:
			e.Debug("log forwarding done")
		}
	}()

	// SIGUSR1 is the socket's release (virtiofsd-shim release, its
	// ExecStopPre=): see launch.Supervisor.Release.
	release, runDone := make(chan struct{}), make(chan struct{})
	defer close(runDone)
	go func() {
		select {
		case <-usr1:
			close(release)
		case <-runDone:
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
		if toJournal {
			origin.Session = session
			log.toJournal(origin)
		}
		sv := &launch.Supervisor{
			Path:         p.binary,
			Args:         p.args,
			Env:          virtiofsd.ChildEnv(os.Environ(), p.version.Flavor),
			Flavor:       p.version.Flavor,
			Socket:       sock.File,
			SocketPath:   sock.String(),
			SharedDir:    cfg.SharedDir,
			Notifier:     launch.SystemdNotifier{},
			Lines:        fwd,
			Log:          entry,
			ReadyTimeout: p.readyTimeout,
			StopTimeout:  p.stopTimeout,
			Session:      session,
			Release:      release,
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
		if cfg, p, err = prepareRun(ctx, &inst, fs); err != nil {
			return err
		}
		if !cfg.Standby {
			entry.Info("the session ended and STANDBY is no longer yes: no virtiofsd waits for the next one")
			return nil
		}
		entry.WithField("session", session).Info("the session ended: starting the next standby virtiofsd")
	}
}

// prepareRun reads the instance's config, with the run flags and the
// arguments after -- applied, and plans virtiofsd's start from it: at the
// start of run and, with STANDBY=yes, again before each session.
func prepareRun(ctx context.Context, inst *instanceFlags, fs *flag.FlagSet) (*config.Config, *plan, error) {
	cfg, err := inst.load(fs)
	if err != nil {
		return nil, nil, err
	}
	cfg.ExtraArgs = append(cfg.ExtraArgs, fs.Args()...)
	// Under systemd, RuntimeDirectory=virtiofsd-shim (preserved) keeps the
	// flavor of the binary between sessions; elsewhere each run asks it.
	p, err := makePlan(ctx, cfg, inst.scope(), virtiofsd.VersionCache{Dir: os.Getenv("RUNTIME_DIRECTORY")})
	if err != nil {
		return nil, nil, err
	}
	if p.rootless {
		if err := checkIDMapPrivileges(cfg, selfStatus()); err != nil {
			return nil, nil, err
		}
	}
	return cfg, p, nil
}

// newSessionID names a session in the journal: 128 random bits in hex, like
// systemd's invocation IDs.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
