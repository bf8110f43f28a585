package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/hooks"
)

const releaseUsage = `Usage: virtiofsd-shim release [--user] --instance=NAME

What virtiofsd@NAME.socket runs when it stops (ExecStopPre=): asks the
running virtiofsd@NAME.service, if any, to give up the socket (SIGUSR1 to
the shim, repeated until it answers), and waits for the shim's answer in
its state file (/run/virtiofsd-shim/NAME.json). The shim decides: a
virtiofsd still waiting for its VM is stopped, and release returns once the
service has ended; a virtiofsd serving a VM (or with one queued on the
socket) goes on until the VM disconnects. During a restart of the socket
with a VM served, release defers the socket's start
(/run/virtiofsd/NAME.restart) until the session ends. At most --timeout.
Does nothing when the service does not run.

Examples:
  virtiofsd-shim release --instance=vm1
`

const resumeUsage = `Usage: virtiofsd-shim resume [--user] --instance=NAME

What virtiofsd@NAME.service runs when it has stopped (ExecStopPost=): when a
restart of virtiofsd@NAME.socket was deferred because a VM was being served
(see release), starts the socket again now that the session has ended,
unless the socket was disabled or masked since, or a stop of it is queued.
It removes /run/virtiofsd/NAME.restart once the start is queued; when the
start fails it exits non-zero and leaves the file, with the error, for
list and check to report. Does nothing otherwise.

Examples:
  virtiofsd-shim resume --instance=vm1
`

const standbyUsage = `Usage: virtiofsd-shim standby [--user] --instance=NAME

What a STANDBY=yes instance's socket runs once it listens (ExecStartPost=,
written by the generator): queues the start of virtiofsd@NAME.service, so
that a virtiofsd waits on the socket before the VM connects. Does not wait
for the start (it waits for the socket's own start to finish).

Examples:
  virtiofsd-shim standby --instance=vm1
`

// hookFlags are the flags of the commands units run about an instance.
type hookFlags struct {
	instance string
	user     bool
	timeout  time.Duration
}

// parseHookFlags parses a hook's flags, with timeout the default --timeout.
func parseHookFlags(name, usage string, args []string, stderr io.Writer, timeout time.Duration) (*hookFlags, error) {
	fs := newFlagSet(name, usage, stderr)
	var f hookFlags
	fs.StringVar(&f.instance, "instance", "", "instance `name` (the %i of the unit)")
	fs.BoolVar(&f.user, "user", false, "a user manager's instance (systemctl --user)")
	fs.DurationVar(&f.timeout, "timeout", timeout, "how long to wait for the service")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 || f.instance == "" {
		fs.Usage()
		return nil, usageErrorf("%s: give --instance=NAME and nothing else", name)
	}
	if err := config.ValidInstance(f.instance); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *hookFlags) hook() hooks.Hook {
	return hooks.Hook{Instance: f.instance, Scope: config.ScopeOf(f.user)}
}

// runHook parses a hook's flags and runs fn with its manager (hooks.Within).
func runHook(ctx context.Context, name, usage string, args []string, stderr io.Writer, timeout time.Duration,
	fn func(ctx context.Context, f *hookFlags, m hooks.Manager) error) error {
	f, err := parseHookFlags(name, usage, args, stderr, timeout)
	if err != nil {
		return err
	}
	return hooks.Within(ctx, f.timeout, f.hook().Dial, func(ctx context.Context, m hooks.Manager) error { return fn(ctx, f, m) })
}

func releaseCmd(ctx context.Context, args []string, stderr io.Writer) error {
	return runHook(ctx, "release", releaseUsage, args, stderr, hooks.DefaultTimeout, func(ctx context.Context, f *hookFlags, m hooks.Manager) error {
		if err := hooks.Release(ctx, f.hook(), m, stderr); err != nil {
			return fmt.Errorf("release (--timeout=%s): %w", f.timeout, err)
		}
		return nil
	})
}

func standbyCmd(ctx context.Context, args []string, stderr io.Writer) error {
	return runHook(ctx, "standby", standbyUsage, args, stderr, hooks.DefaultTimeout, func(ctx context.Context, f *hookFlags, m hooks.Manager) error {
		return hooks.Standby(ctx, f.hook(), m)
	})
}

func resumeCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseHookFlags("resume", resumeUsage, args, stderr, hooks.DefaultTimeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return hooks.Resume(ctx, f.hook(), f.hook().Dial, stderr)
}

const reloadUsage = `Usage: virtiofsd-shim reload [--user] --instance=NAME

What systemctl reload virtiofsd@NAME.service runs (ExecReload=): asks the
running shim (SIGHUP) to swap virtiofsd under the running VM, and waits
for its answer in the state file (/run/virtiofsd-shim/NAME.json). The shim
starts the installed virtiofsd with the config as it is now, waits for it
to be ready, hands the old one's state over (the VM pauses for
milliseconds), and the old one exits. With no VM connected yet, the new
virtiofsd waits for it instead of the old one. Exits non-zero with the
cause when the shim refuses (the C virtiofsd, FRONT=no, a changed key a
reload does not apply, a live migration under way, ...) or the swap fails;
the session then goes on as it was. At most --timeout.

Examples:
  systemctl reload virtiofsd@vm1.service
  virtiofsd-shim reload --instance=vm1
`

func reloadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runHook(ctx, "reload", reloadUsage, args, stderr, hooks.ReloadTimeout, func(ctx context.Context, f *hookFlags, m hooks.Manager) error {
		a, err := hooks.Reload(ctx, f.hook(), m)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, hooks.ReloadSummary(f.instance, a))
		return nil
	})
}
