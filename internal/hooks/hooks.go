package hooks

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

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// Release is what the socket's stop runs (ExecStopPre=): it asks the
// running service, if any, to give up the socket (SIGUSR1 to the shim). A
// virtiofsd still waiting for its VM is stopped; one serving a VM goes on
// until the VM disconnects, and a restart of the socket meanwhile is
// deferred until then (the restart marker). It returns once the service is
// inactive or serving, or when ctx ends.
func Release(ctx context.Context, h Hook, m Manager, stderr io.Writer) error {
	unit := h.service()
	st, err := serviceState(ctx, m, unit)
	if err != nil {
		return err
	}
	if st.done() {
		return nil
	}
	if st.serving() {
		// Still tell it: no session may follow on the stopped socket.
		fmt.Fprintf(stderr, "%s serves a VM: it goes on until the VM disconnects\n", unit)
		if restarting(ctx, m, h.socket()) {
			// systemd refuses to start a socket while its service runs
			// ("Socket service ... already active, refusing"). The
			// marker makes the socket's start a skipped condition
			// instead (the restart succeeds), and the service's
			// ExecStopPost= (resume) starts the socket once the VM left.
			marker, err := RestartMarker(h.Scope, h.Instance)
			if err == nil {
				err = os.WriteFile(marker, []byte("virtiofsd-shim release: start the socket again once its session ends\n"), 0o644)
			}
			if err != nil {
				return fmt.Errorf("defer the socket's start: %w", err)
			}
			fmt.Fprintf(stderr, "%s listens again, with its new settings, as soon as that VM disconnects\n", h.socket())
		}
	}
	if err := m.KillMain(ctx, unit, syscall.SIGUSR1); err != nil {
		if st, serr := serviceState(ctx, m, unit); serr == nil && st.done() {
			return nil // it ended in between
		}
		return fmt.Errorf("ask %s to release its socket: %w", unit, err)
	}
	for {
		st, err := serviceState(ctx, m, unit)
		if err != nil {
			return err
		}
		if st.done() || st.serving() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still %s: its virtiofsd holds the old socket, stop it with systemctl stop %s", unit, st.active, unit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Standby is what a STANDBY=yes socket runs once it listens
// (ExecStartPost=): it queues the service's start and does not wait for it
// (the start is ordered after the socket's, which is running this hook).
func Standby(ctx context.Context, h Hook, m Manager) error {
	if err := m.Start(ctx, h.service()); err != nil {
		return fmt.Errorf("start %s: %w", h.service(), err)
	}
	return nil
}

// Deferred tells whether a restart of the instance's socket waits for its
// session to end.
func Deferred(h Hook) bool {
	marker, err := RestartMarker(h.Scope, h.Instance)
	if err != nil {
		return false
	}
	_, err = os.Stat(marker)
	return err == nil
}

// Resume is what the service runs when it has stopped (ExecStopPost=): when
// a restart of the socket was deferred (see Release), it starts the socket
// again. connect reaches the manager, only when there is something to do.
func Resume(ctx context.Context, h Hook, connect func(context.Context) (Manager, func(), error), stderr io.Writer) error {
	marker, err := RestartMarker(h.Scope, h.Instance)
	if err != nil {
		return err
	}
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		return nil // the common case: no restart was deferred
	}
	m, done, err := connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start the socket again: %w", err)
	}
	// Queued in this order, the socket's start waits for the service's stop
	// (between ordered units a stop goes first), which ends once this
	// command has: systemd refuses to start the socket before.
	if err := m.Stop(ctx, h.service()); err != nil {
		return fmt.Errorf("stop %s: %w", h.service(), err)
	}
	if err := m.Start(ctx, h.socket()); err != nil {
		return fmt.Errorf("start %s again: %w", h.socket(), err)
	}
	fmt.Fprintf(stderr, "the session has ended: starting %s again, with its new settings\n", h.socket())
	return nil
}

// restarting tells whether the unit's job is a restart (rather than a stop).
func restarting(ctx context.Context, m Manager, unit string) bool {
	j, err := m.JobType(ctx, unit)
	return err == nil && (j == "restart" || j == "try-restart" || j == "reload-or-start")
}

// RestartMarker is the file whose presence defers the socket's start
// (virtiofsd@.socket: ConditionPathExists=!%t/virtiofsd/%i.restart).
func RestartMarker(scope config.Scope, instance string) (string, error) {
	rt, err := scope.RuntimeDir(os.Getenv)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "virtiofsd", instance+".restart"), nil
}

type svcState struct{ active, status string }

func (s svcState) done() bool { return s.active == "inactive" || s.active == "failed" }

func (s svcState) serving() bool { return strings.HasPrefix(s.status, "Serving") }

func serviceState(ctx context.Context, m Manager, unit string) (svcState, error) {
	var st svcState
	var err error
	if st.active, err = m.ActiveState(ctx, unit); err != nil {
		return svcState{}, err
	}
	st.status, _ = m.StatusText(ctx, unit)
	return st, nil
}
