package main

import (
	"context"
	"io"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/service"
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

func runCmd(ctx context.Context, args []string, stderr io.Writer, log *logsink.ShimLog, releases <-chan os.Signal) error {
	ctx, sigs := service.CatchSignals(ctx, releases)
	defer sigs.Stop()
	fs := newFlagSet("run", runUsage, stderr)
	var inst instanceFlags
	inst.register(fs, true)
	logTarget := fs.String("log-target", "auto", "where virtiofsd's lines go: `auto` (the journal under systemd, else stderr), journal or stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	route, err := logsink.NewRoute(*logTarget, inst.instance, inst.user, logsink.UnderJournal, logsink.SelfUnitOf)
	if err != nil {
		return usageErrorf("run: --log-target=%v", err)
	}
	iv := &service.Invocation{
		Instance: inst.instance,
		Scope:    inst.scope(),
		Load: func() (*config.Config, error) {
			cfg, err := inst.load(fs)
			if err != nil {
				return nil, err
			}
			cfg.ExtraArgs = append(cfg.ExtraArgs, fs.Args()...)
			return cfg, nil
		},
		Version: version,
		Route:   route,
		Log:     log,
		Signals: sigs,
		Stderr:  stderr,
	}
	return iv.Serve(ctx)
}
