package virtiofsd

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func exited(code int) syscall.WaitStatus             { return syscall.WaitStatus(code << 8) }
func killedBy(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }

func TestCleanStopIsExactPerFlavorAndPhase(t *testing.T) {
	starting, waiting, serving := Stop{}, Stop{Ready: true}, Stop{Serving: true, Ready: true}
	for _, tc := range []struct {
		name  string
		f     Flavor
		s     Stop
		st    syscall.WaitStatus
		clean bool
	}{
		{"C killed by SIGTERM before its handlers", C, starting, killedBy(syscall.SIGTERM), true},
		{"C accept() interrupted, line read late", C, waiting, exited(1), true},
		{"C accept() interrupted", C, waiting, exited(1), true},
		{"C connected as the stop began", C, waiting, exited(0), true},
		{"C sandbox parent after SIGTERM while serving", C, serving, exited(0), true},
		{"C exits 1 while serving: its child failed", C, serving, exited(1), false},
		{"C exits 1 without its readiness line: a startup error", C, starting, exited(1), false},
		{"C killed by SIGKILL", C, waiting, killedBy(syscall.SIGKILL), false},
		{"C other status", C, waiting, exited(2), false},
		{"Rust killed by SIGTERM before its handlers", Rust, starting, killedBy(syscall.SIGTERM), true},
		{"Rust _exit(1) before readiness", Rust, starting, exited(1), true},
		{"Rust _exit(1) waiting", Rust, waiting, exited(1), true},
		{"Rust _exit(1) serving", Rust, serving, exited(1), true},
		{"Rust client hung up first", Rust, serving, exited(0), true},
		{"Rust argument error", Rust, starting, exited(2), false},
		{"Rust sandboxed child killed by SIGKILL", Rust, serving, exited(256 - 9), false},
		{"Rust killed by SIGSEGV", Rust, serving, killedBy(syscall.SIGSEGV), false},
		{"unknown flavor exits 1", Auto, waiting, exited(1), false},
	} {
		assert.Equal(t, tc.clean, tc.f.CleanStop(tc.st, tc.s), tc.name)
	}
}

func TestOnlyExitZeroIsACleanEndWithoutAStop(t *testing.T) {
	for _, f := range []Flavor{C, Rust} {
		assert.True(t, f.CleanExit(exited(0)), f)
		assert.False(t, f.CleanExit(exited(1)), f)
		assert.False(t, f.CleanExit(killedBy(syscall.SIGTERM)), f)
	}
}

// TestRustReportsAKilledSandboxChildAsANegativeExit: the Rust one exits
// 256-N when its sandboxed child dies of signal N; the C one's statuses
// are what they say.
func TestRustReportsAKilledSandboxChildAsANegativeExit(t *testing.T) {
	for _, tc := range []struct {
		f      Flavor
		st     syscall.WaitStatus
		sig    syscall.Signal
		signal bool
	}{
		{Rust, exited(256 - 9), syscall.SIGKILL, true},
		{Rust, exited(256 - 64), syscall.Signal(64), true},
		{Rust, exited(256 - 65), 0, false},
		{Rust, exited(1), 0, false},
		{C, exited(256 - 9), 0, false},
		{C, killedBy(syscall.SIGSEGV), syscall.SIGSEGV, true},
		{Rust, killedBy(syscall.SIGTERM), syscall.SIGTERM, true},
	} {
		sig, ok := tc.f.ExitSignal(tc.st)
		assert.Equal(t, tc.signal, ok, "%s %d", tc.f, tc.st)
		assert.Equal(t, tc.sig, sig, "%s %d", tc.f, tc.st)
	}
}
