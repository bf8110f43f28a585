package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
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

// connectManager reaches the service manager of the scope.
func connectManager(ctx context.Context, user bool) (*sddbus.Conn, error) {
	var (
		c   *sddbus.Conn
		err error
	)
	if user {
		c, err = sddbus.NewUserConnectionContext(ctx)
	} else {
		c, err = sddbus.NewSystemdConnectionContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return c, nil
}

func releaseCmd(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseHookFlags("release", releaseUsage, args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, err := connectManager(ctx, f.user)
	if err != nil {
		return err
	}
	defer conn.Close()
	unit := "virtiofsd@" + f.instance + ".service"
	st, err := serviceState(ctx, conn, unit)
	if err != nil {
		return err
	}
	if st.done() {
		return nil
	}
	sig := syscall.SIGUSR1
	if st.serving() {
		// Still tell it: no session may follow on the stopped socket.
		fmt.Fprintf(stderr, "%s serves a VM: it goes on until the VM disconnects\n", unit)
		if restarting(ctx, conn, "virtiofsd@"+f.instance+".socket") {
			// systemd refuses to start a socket while its service runs
			// ("Socket service ... already active, refusing"): the shim
			// starts the socket again once its VM has left.
			fmt.Fprintf(stderr, "virtiofsd@%s.socket cannot listen again while that session runs: "+
				"it will be started with its new settings as soon as the VM disconnects\n", f.instance)
			sig = syscall.SIGUSR2
		}
	}
	if err := conn.KillUnitWithTarget(ctx, unit, sddbus.Main, int32(sig)); err != nil {
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
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, err := connectManager(ctx, f.user)
	if err != nil {
		return err
	}
	defer conn.Close()
	unit := "virtiofsd@" + f.instance + ".service"
	// Not waited for: the start is ordered after the socket's, which is
	// running this command.
	if _, err := conn.StartUnitContext(ctx, unit, "replace", nil); err != nil {
		return fmt.Errorf("start %s: %w", unit, err)
	}
	return nil
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

// restartSocketAfter stops unit, the calling shim's own service, and starts
// its socket: queued in that order, systemd runs the socket's start once
// the service has stopped (a stop goes first between ordered units), which
// it refuses while the service runs. Neither job is waited for.
func restartSocketAfter(ctx context.Context, user bool, instance string) error {
	conn, err := connectManager(ctx, user)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.StopUnitContext(ctx, "virtiofsd@"+instance+".service", "replace", nil); err != nil {
		return fmt.Errorf("stop virtiofsd@%s.service: %w", instance, err)
	}
	if _, err := conn.StartUnitContext(ctx, "virtiofsd@"+instance+".socket", "replace", nil); err != nil {
		return fmt.Errorf("start virtiofsd@%s.socket again: %w", instance, err)
	}
	return nil
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
