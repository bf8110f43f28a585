// Package exitcode decides, in one table, the exit status of virtiofsd-shim
// for every kind of error, so that `systemctl status` tells the cause.
package exitcode

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The codes, sysexits(3)-style where one fits.
const (
	OK          = 0  // clean end: the VM disconnected, or the shim was stopped
	Usage       = 64 // EX_USAGE: bad command line
	VMProtocol  = 65 // EX_DATAERR: the VM sent a malformed vhost-user message (the front ended its session)
	Activation  = 66 // EX_NOINPUT: no usable socket from systemd
	Unavailable = 69 // EX_UNAVAILABLE: virtiofsd (or systemd, for list) missing or unusable
	Software    = 70 // EX_SOFTWARE: an internal error of the shim
	CrashLoop   = 71 // EX_OSERR: virtiofsd crashed too often under a connected VM, and the shim gave up
	ShimKilled  = 72 // the last shim was killed while virtiofsd served a VM without the front: the session is lost
	Degraded    = 74 // EX_IOERR: check: the instance's running session is degraded (virtiofsd crashed and was recovered)
	NotReady    = 75 // EX_TEMPFAIL: virtiofsd never printed its readiness line in time
	Migration   = 76 // EX_PROTOCOL: virtiofsd reported that loading or saving migration state failed
	Config      = 78 // EX_CONFIG: the instance's config or options are invalid
)

// Row documents one exit status, or a range of them.
type Row struct {
	Code    string // as printed: "64", "1-63", "128+N"
	Meaning string
	lo, hi  int // the statuses the row covers
}

// Table is the exit status table printed by --help and in docs/operations.md.
var Table = []Row{
	{"0", "clean end: the VM disconnected, or the service was stopped and virtiofsd stopped within the grace period", OK, OK},
	{"1-63", "virtiofsd failed with this exit status of its own (it is passed through)", 1, 63},
	{"64", "usage: unknown subcommand, flag or argument", Usage, Usage},
	{"65", "the VM sent a malformed vhost-user message (with the front, FRONT=auto): its session was ended, and virtiofsd with it", VMProtocol, VMProtocol},
	{"66", "activation: no socket from systemd, more than one, or not a listening AF_UNIX stream socket", Activation, Activation},
	{"69", "unavailable: the virtiofsd binary is missing, not executable or of unknown flavor, or the C one for a rootless (--user) instance; for list, systemd is unreachable", Unavailable, Unavailable},
	{"70", "internal error of the shim", Software, Software},
	{"71", "crash loop: virtiofsd crashed 5 times within 60 s under a connected VM (with the front), so the shim gave up and closed the VM's connection: the guest's share waits until the VM restarts", CrashLoop, CrashLoop},
	{"72", "shim crash without the front: the last shim was killed (a signal) while its virtiofsd served a VM directly (FRONT=no, the C virtiofsd), so virtiofsd was stopped with it and the VM's share is disconnected; the restarted shim says so and ends, the socket listens again", ShimKilled, ShimKilled},
	{"74", "check: the instance's running session is degraded: virtiofsd crashed under the VM and a fresh one serves it, and the guest must umount and mount the share (never the service's own status)", Degraded, Degraded},
	{"75", "virtiofsd did not print its readiness line within the ready timeout and was killed", NotReady, NotReady},
	{"76", "a live migration failed: virtiofsd could not load the incoming state (destination: the VM did not arrive) or save it (source), even though it then exited 0", Migration, Migration},
	{"78", "config: the instance config or an option is invalid (missing file, unknown key, bad value, unsafe permissions)", Config, Config},
	{"128+N", "virtiofsd was killed by signal N (137 also when it ignored SIGTERM for the whole stop grace period)", signalBase + 1, signalBase + 64},
}

// signalBase is added to the number of the signal that ended virtiofsd.
const signalBase = 128

// Explain says what exit status status of the shim means, from Table,
// with the signal named for 128+N.
func Explain(status int) string {
	for _, r := range Table {
		if status < r.lo || status > r.hi {
			continue
		}
		if r.lo > signalBase {
			return strings.Replace(r.Meaning, "signal N", "signal "+SignalName(status-signalBase), 1)
		}
		return r.Meaning
	}
	return "unknown exit status"
}

// SignalName is "9 (SIGKILL)", or the number alone when it has no name.
func SignalName(n int) string {
	if name := unix.SignalName(syscall.Signal(n)); name != "" {
		return fmt.Sprintf("%d (%s)", n, name)
	}
	return strconv.Itoa(n)
}

// UsageError marks a bad command line.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ExitCode implements Coder.
func (e *UsageError) ExitCode() int { return Usage }

// UnavailableError marks a required service that cannot be reached.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// ExitCode implements Coder.
func (e *UnavailableError) ExitCode() int { return Unavailable }

// Coder is an error that carries its own exit status. Each package's errors
// implement it, so that this package depends on none of them.
type Coder interface{ ExitCode() int }

// For returns the exit status for err.
func For(err error) int {
	var c Coder
	switch {
	case err == nil:
		return OK
	case errors.As(err, &c):
		if code := c.ExitCode(); code > 0 && code < 256 {
			return code
		}
	}
	return Software
}
