package virtiofsd

import "syscall"

// What each flavor's exit status means: the rules beside the lines, so that
// the supervisor asks and never knows a flavor's habits. Verified with the
// real binaries (C 7.2, Rust 1.13.2).

// Stop is what the supervisor knew of a virtiofsd it stopped with SIGTERM.
type Stop struct {
	// Serving: a client was connected when the stop began.
	Serving bool
	// Ready: virtiofsd had printed its readiness line by the time it ended.
	Ready bool
}

// CleanExit tells whether a virtiofsd that was not stopped ended well: both
// flavors exit 0 once their client has hung up.
func (f Flavor) CleanExit(st syscall.WaitStatus) bool {
	return st.Exited() && st.ExitStatus() == 0
}

// CleanStop tells whether a virtiofsd of flavor f ended the way it does
// when stopped with SIGTERM, given what the supervisor knew of it (s):
//
//   - Both, before they set up their handlers: killed by SIGTERM.
//   - Rust: its handler does _exit(1), in every phase (its sandbox child
//     may then print "Parent process died unexpectedly"). It exits 0 only
//     when the client hung up first.
//   - C, waiting: accept() is interrupted, it prints "vhost socket accept:
//     Interrupted system call" and exits 1. That needs its readiness line
//     printed (it comes right before accept), so a C virtiofsd that exits 1
//     without it failed on its own (a missing SHARED_DIR, say).
//   - C, serving: the sandbox parent exits 0, its child ends the session.
//
// Anything else (another status, another signal, C's 1 while serving) is
// a failure the stop did not cause.
func (f Flavor) CleanStop(st syscall.WaitStatus, s Stop) bool {
	switch {
	case st.Signaled():
		return st.Signal() == syscall.SIGTERM
	case st.ExitStatus() == 0:
		return true
	case st.ExitStatus() != 1:
		return false
	case f == Rust:
		return true
	case f == C:
		return !s.Serving && s.Ready
	}
	return false
}

// ExitSignal returns the signal that ended a virtiofsd of flavor f, if one
// did: the wait status says so, or the Rust one reports a sandboxed child
// killed by signal N as exit(-N), that is status 256-N.
func (f Flavor) ExitSignal(st syscall.WaitStatus) (syscall.Signal, bool) {
	if st.Signaled() {
		return st.Signal(), true
	}
	if c := st.ExitStatus(); f == Rust && c > 256-65 {
		return syscall.Signal(256 - c), true
	}
	return 0, false
}
