package launch

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// ExitError is virtiofsd ending in failure: a non-zero exit status or death
// by a signal, on its own or in a way a stop does not explain.
type ExitError struct {
	Status      syscall.WaitStatus
	Flavor      virtiofsd.Flavor
	BeforeReady bool        // it never printed its readiness line
	Stopped     bool        // the shim had sent SIGTERM (a stop), in StopPhase
	StopPhase   state.Phase // where virtiofsd was when the stop began: starting, waiting or serving
	Tail        []string    // its last lines
}

// Signal returns the signal that ended virtiofsd, if one did, as its
// flavor reports it (virtiofsd.Flavor.ExitSignal).
func (e *ExitError) Signal() (syscall.Signal, bool) { return e.Flavor.ExitSignal(e.Status) }

// Code is the exit status the shim passes on: virtiofsd's own code, or
// 128+signal when a signal ended it.
func (e *ExitError) ExitCode() int {
	if sig, ok := e.Signal(); ok {
		return 128 + int(sig)
	}
	return e.Status.ExitStatus()
}

func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString("virtiofsd ")
	if sig, ok := e.Signal(); ok {
		fmt.Fprintf(&b, "was killed by signal %d (%s)", int(sig), sig)
	} else {
		fmt.Fprintf(&b, "exited with status %d", e.Status.ExitStatus())
	}
	if e.BeforeReady {
		b.WriteString(" before it was ready")
	}
	if e.Stopped {
		fmt.Fprintf(&b, ", which a SIGTERM while %s does not explain", e.StopPhase)
	}
	writeTail(&b, e.Tail)
	return b.String()
}

// MigrationError is a session whose virtiofsd reported that a live
// migration failed: it could not load the state the source sent
// (Incoming: this host is the destination, and the VM did not arrive), or
// could not save its own (the source). virtiofsd itself exits 0 once QEMU
// hangs up, so without this the session would end as a success.
type MigrationError struct {
	Incoming bool
	Line     string // virtiofsd's line, e.g. "Migration failed: Failed to load state: ..."
	Tail     []string
}

// ExitCode is the shim's exit status for a failed migration.
func (e *MigrationError) ExitCode() int { return exitcode.Migration }

func (e *MigrationError) Error() string {
	var b strings.Builder
	if e.Incoming {
		b.WriteString("incoming live migration failed: virtiofsd could not load the state the source sent, so the VM did not arrive on this host")
	} else {
		b.WriteString("outgoing live migration failed: virtiofsd could not save its state for the destination")
	}
	fmt.Fprintf(&b, " (%s)", e.Line)
	writeTail(&b, e.Tail)
	return b.String()
}

// NotReadyError is virtiofsd not printing its readiness line in time; the
// shim killed it.
type NotReadyError struct {
	Timeout time.Duration
	Tail    []string
}

// ExitCode is the shim's exit status when virtiofsd never became ready.
func (e *NotReadyError) ExitCode() int { return exitcode.NotReady }

func (e *NotReadyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "virtiofsd did not print its readiness line (%q) within %v and was killed; "+
		"raise READY_TIMEOUT= if the host is slow", virtiofsd.ReadyText, e.Timeout)
	writeTail(&b, e.Tail)
	return b.String()
}

// StopTimeoutError is virtiofsd still running when the stop grace period
// ended; the shim killed it with SIGKILL.
type StopTimeoutError struct {
	Grace time.Duration
	Tail  []string
}

func (e *StopTimeoutError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "virtiofsd did not stop within %v of SIGTERM and was killed with SIGKILL", e.Grace)
	writeTail(&b, e.Tail)
	return b.String()
}

// Code is 128+SIGKILL, what systemd shows for a killed process.
func (e *StopTimeoutError) ExitCode() int { return 128 + int(syscall.SIGKILL) }

func writeTail(b *strings.Builder, tail []string) {
	if len(tail) == 0 {
		b.WriteString(" (it printed nothing)")
		return
	}
	b.WriteString("; its last lines:")
	for _, l := range tail {
		b.WriteString("\n  ")
		b.WriteString(l)
	}
}
