package check

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// DegradedError is check's error for a running session that is degraded.
type DegradedError struct {
	Instance string
	Degraded state.Degraded
}

func (e *DegradedError) Error() string {
	return fmt.Sprintf("%s is degraded: virtiofsd crashed under the VM (last: %s; %d recoveries) and a fresh one serves it without its FUSE state, "+
		"so the guest's requests on the share fail with EBADF: in the guest, close everything open on the share, then umount and mount it again "+
		"(the degraded mark stays until the VM's session ends)", e.Instance, e.Degraded.LastEnd, e.Degraded.Recoveries)
}

// ExitCode is check's exit status for a degraded instance.
func (e *DegradedError) ExitCode() int { return exitcode.Degraded }

// state reads the instance's typed state and its deferred-restart marker,
// offline: a fact that says where the service is (none when no state was
// ever written), and warnings about a deferred restart. A running session
// that is degraded is an error finding, and returned.
func (r *Report) state(o Options) error {
	instance := r.Config.Instance
	st, err := state.Load(o.Scope, o.Env, instance)
	switch {
	case err != nil:
		r.warn(CodeStateUnreadable, fmt.Sprintf("cannot read the instance's state: %v", err), "", 0, "")
	case st != nil:
		r.fact(CodeState, "state", describeState(st, o.ProcessExists))
	}
	var derr error
	running := st != nil && !st.Phase.Over() && o.ProcessExists(st.ShimPID)
	if running && st.Degraded != nil {
		derr = &DegradedError{Instance: instance, Degraded: *st.Degraded}
		r.add(Finding{Kind: Error, Code: CodeDegraded, Message: derr.Error(), Fix: "umount and mount the share in the guest, with nothing held open on it"})
	}
	if running {
		r.olderBinaries(st, instance)
	}
	rt, err := o.Scope.RuntimeDir(o.Env)
	if err != nil {
		return derr
	}
	marker := state.MarkerPath(rt, instance)
	d, err := state.ReadMarker(marker)
	socket := "virtiofsd@" + instance + ".socket"
	start := fmt.Sprintf("rm %s; %s start %s", marker, r.Systemctl, socket)
	switch {
	case err != nil:
		r.warn(CodeMarkerUnreadable, err.Error(), marker, 0, "")
	case d == nil:
	case d.ResumeError != "":
		r.warn(CodeDeferredRestartFailed, fmt.Sprintf("deferred restart failed: %s was restarted while a VM was served, and starting it again "+
			"when the session ended failed: %s. It stays down: run %s", socket, d.ResumeError, start), marker, 0, start)
	case running:
		r.warn(CodeDeferredRestartPending, fmt.Sprintf("deferred restart: %s was restarted while a VM was served: it listens again once that VM disconnects (%s; rm it to cancel)",
			socket, marker), marker, 0, "")
	default:
		r.warn(CodeDeferredRestartStale, fmt.Sprintf("deferred restart left behind: %s exists but no session runs, so the socket's start is skipped: "+
			"run %s", marker, start), marker, 0, start)
	}
	return derr
}

// olderBinaries warns of each program the running session runs whose file
// was replaced since it was started (an upgrade), with what moves it onto
// the installed one.
func (r *Report) olderBinaries(st *state.State, instance string) {
	unit := "virtiofsd@" + instance + ".service"
	for _, p := range st.Replaced() {
		v := ""
		if p.Binary.Version != "" {
			v = " " + p.Binary.Version
		}
		msg := fmt.Sprintf("%s runs an older %s%s than the installed one: %s", unit, p.Program, v, p.Reason)
		fix := ""
		if st.Movable {
			fix = r.Systemctl + " restart " + unit
			msg += "; " + fix + " moves its VM onto the installed one"
		} else {
			msg += "; its next session gets the installed one (this one cannot move"
			if st.UnmovableReason != "" {
				msg += ": " + st.UnmovableReason
			}
			msg += ")"
		}
		r.warn(CodeOlderBinary, msg, p.Binary.Path, 0, fix)
	}
}

// describeState is the state fact.
func describeState(st *state.State, exists func(pid int) bool) string {
	var b strings.Builder
	b.WriteString(string(st.Phase))
	if st.VirtiofsdPID != 0 {
		fmt.Fprintf(&b, ", virtiofsd pid %d", st.VirtiofsdPID)
	}
	if st.Session != "" {
		fmt.Fprintf(&b, ", session %d (%s)", st.SessionNumber, st.Session)
	}
	if st.Standby {
		b.WriteString(", standby")
	}
	switch st.Release {
	case state.KeepsServing:
		b.WriteString(", socket released: serves its VM until it disconnects")
	case state.LetGo:
		b.WriteString(", socket released")
	}
	if d := st.Degraded; d != nil {
		fmt.Fprintf(&b, ", degraded (virtiofsd crashed, last: %s; %d recoveries)", d.LastEnd, d.Recoveries)
	}
	if f := st.Failure; f != nil {
		fmt.Fprintf(&b, ", failed with exit status %d: %s", f.ExitCode, f.Reason)
	}
	if !st.Phase.Over() {
		if st.Movable {
			b.WriteString(", movable: a restart or reload keeps its VM")
		} else if st.UnmovableReason != "" {
			fmt.Fprintf(&b, ", not movable: %s", st.UnmovableReason)
		}
	}
	if !st.Phase.Over() && !exists(st.ShimPID) {
		fmt.Fprintf(&b, " (written by shim pid %d, which no longer runs)", st.ShimPID)
	}
	fmt.Fprintf(&b, "; at %s", st.Updated.Format(time.RFC3339))
	return b.String()
}

// processExists tells whether pid names a process (signal 0).
func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
