package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
)

const releaseUsage = `Usage: virtiofsd-shim release [--user] --instance=NAME

What virtiofsd@NAME.socket runs when it stops (ExecStopPre=): asks the
running virtiofsd@NAME.service, if any, to give up the socket (SIGUSR1 to
the shim). A virtiofsd still waiting for its VM is stopped, so that the
socket's next start gets a new one; a virtiofsd serving a VM goes on until
the VM disconnects. Returns once the service is inactive or serving, at
most --timeout later. Does nothing when the service does not run.

Examples:
  virtiofsd-shim release --instance=vm1
`

const resumeUsage = `Usage: virtiofsd-shim resume [--user] --instance=NAME

What virtiofsd@NAME.service runs when it has stopped (ExecStopPost=): when a
restart of virtiofsd@NAME.socket was deferred because a VM was being served
(see release), starts the socket again now that the session has ended. Does
nothing otherwise.

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

func parseHookFlags(name, usage string, args []string, stderr io.Writer) (*hookFlags, error) {
	fs := newFlagSet(name, usage, stderr)
	var f hookFlags
	fs.StringVar(&f.instance, "instance", "", "instance `name` (the %i of the unit)")
	fs.BoolVar(&f.user, "user", false, "a user manager's instance (systemctl --user)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the service")
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

// withManager runs fn with the hook's instance's service manager, reached
// over its private socket, else its bus, as list reaches it
// (instances.ConnectScope), all within the hook's --timeout.
func (f *hookFlags) withManager(ctx context.Context, fn func(ctx context.Context, conn *sddbus.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	b, err := instances.ConnectScope(ctx, f.scope(), os.Getenv)
	if err != nil {
		return err
	}
	defer b.Close()
	return fn(ctx, b.Manager())
}

// scope is the service manager of the hook's instance.
func (f *hookFlags) scope() config.Scope {
	if f.user {
		return config.User
	}
	return config.System
}

func releaseCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseHookFlags("release", releaseUsage, args, stderr)
	if err != nil {
		return err
	}
	return f.withManager(ctx, func(ctx context.Context, conn *sddbus.Conn) error { return release(ctx, f, conn, stderr) })
}

// release is releaseCmd once the manager is reached.
func release(ctx context.Context, f *hookFlags, conn *sddbus.Conn, stderr io.Writer) error {
	unit := "virtiofsd@" + f.instance + ".service"
	st, err := serviceState(ctx, conn, unit)
	if err != nil {
		return err
	}
	if st.done() {
		return nil
	}
	if st.serving() {
		// Still tell it: no session may follow on the stopped socket.
		fmt.Fprintf(stderr, "%s serves a VM: it goes on until the VM disconnects\n", unit)
		if restarting(ctx, conn, "virtiofsd@"+f.instance+".socket") {
			// systemd refuses to start a socket while its service runs
			// ("Socket service ... already active, refusing"). The
			// marker makes the socket's start a skipped condition
			// instead (the restart succeeds), and the service's
			// ExecStopPost= (resume) starts the socket once the VM left.
			marker, err := restartMarker(f.scope(), f.instance)
			if err == nil {
				err = os.WriteFile(marker, []byte("virtiofsd-shim release: start the socket again once its session ends\n"), 0o644)
			}
			if err != nil {
				return fmt.Errorf("defer the socket's start: %w", err)
			}
			fmt.Fprintf(stderr, "virtiofsd@%s.socket listens again, with its new settings, as soon as that VM disconnects\n", f.instance)
		}
	}
	if err := conn.KillUnitWithTarget(ctx, unit, sddbus.Main, int32(syscall.SIGUSR1)); err != nil {
		if st, serr := serviceState(ctx, conn, unit); serr == nil && st.done() {
			return nil // it ended in between
		}
		return fmt.Errorf("ask %s to release its socket: %w", unit, err)
	}
	for {
		st, err := serviceState(ctx, conn, unit)
		if err != nil {
			return err
		}
		if st.done() || st.serving() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still %s after %s: its virtiofsd holds the old socket, stop it with systemctl stop %s", unit, st.active, f.timeout, unit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func standbyCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseHookFlags("standby", standbyUsage, args, stderr)
	if err != nil {
		return err
	}
	return f.withManager(ctx, func(ctx context.Context, conn *sddbus.Conn) error {
		unit := "virtiofsd@" + f.instance + ".service"
		// Not waited for: the start is ordered after the socket's, which is
		// running this command.
		if _, err := conn.StartUnitContext(ctx, unit, "replace", nil); err != nil {
			return fmt.Errorf("start %s: %w", unit, err)
		}
		return nil
	})
}

// restarting tells whether the unit's job is a restart (rather than a stop).
func restarting(ctx context.Context, conn *sddbus.Conn, unit string) bool {
	jobs, err := conn.ListJobsContext(ctx)
	if err != nil {
		return false
	}
	for _, j := range jobs {
		if j.Unit == unit && (j.JobType == "restart" || j.JobType == "try-restart" || j.JobType == "reload-or-start") {
			return true
		}
	}
	return false
}

// restartMarker is the file whose presence defers the socket's start
// (virtiofsd@.socket: ConditionPathExists=!%t/virtiofsd/%i.restart).
func restartMarker(scope config.Scope, instance string) (string, error) {
	rt, err := scope.RuntimeDir(os.Getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "virtiofsd", instance+".restart"), nil
}

func resumeCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseHookFlags("resume", resumeUsage, args, stderr)
	if err != nil {
		return err
	}
	marker, err := restartMarker(f.scope(), f.instance)
	if err != nil {
		return err
	}
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		return nil // the common case: no restart was deferred
	}
	return f.withManager(ctx, func(ctx context.Context, conn *sddbus.Conn) error {
		if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("start the socket again: %w", err)
		}
		// Queued in this order, the socket's start waits for the service's stop
		// (between ordered units a stop goes first), which ends once this
		// command has: systemd refuses to start the socket before.
		unit := "virtiofsd@" + f.instance
		if _, err := conn.StopUnitContext(ctx, unit+".service", "replace", nil); err != nil {
			return fmt.Errorf("stop %s.service: %w", unit, err)
		}
		if _, err := conn.StartUnitContext(ctx, unit+".socket", "replace", nil); err != nil {
			return fmt.Errorf("start %s.socket again: %w", unit, err)
		}
		fmt.Fprintf(stderr, "the session has ended: starting %s.socket again, with its new settings\n", unit)
		return nil
	})
}

type svcState struct{ active, status string }

func (s svcState) done() bool { return s.active == "inactive" || s.active == "failed" }

func (s svcState) serving() bool { return strings.HasPrefix(s.status, "Serving") }

func serviceState(ctx context.Context, conn *sddbus.Conn, unit string) (svcState, error) {
	a, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return svcState{}, fmt.Errorf("read %s's state: %w", unit, err)
	}
	var st svcState
	st.active, _ = a.Value.Value().(string)
	if s, err := conn.GetUnitTypePropertyContext(ctx, unit, "Service", "StatusText"); err == nil {
		st.status, _ = s.Value.Value().(string)
	}
	return st, nil
}
