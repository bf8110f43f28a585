package exitcode_test

import (
	"errors"
	"fmt"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/service"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// exited and killed build the wait statuses of a child that exited with
// code, or died by sig (see wait(2)).
func exited(code int) syscall.WaitStatus           { return syscall.WaitStatus(code << 8) }
func killed(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }

func TestEveryCauseHasItsExitStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("run: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"clean end", nil, exitcode.OK},
		{"usage", &exitcode.UsageError{Msg: "bad flag"}, exitcode.Usage},
		{"activation, wrapped", wrap(&activation.Error{Reason: "no socket"}), exitcode.Activation},
		{"config file", &config.Error{File: "/etc/virtiofsd/vm1.conf", Line: 3, Msg: "unknown key"}, exitcode.Config},
		{"option refused", &virtiofsd.OptionsError{Key: "EXTRA_ARGS", Msg: "--syslog"}, exitcode.Config},
		{"binary missing", wrap(virtiofsd.BinaryErrorf("x")), exitcode.Unavailable},
		{"systemd unreachable", &exitcode.UnavailableError{Err: errors.New("no bus")}, exitcode.Unavailable},
		{"never ready", &launch.NotReadyError{}, exitcode.NotReady},
		{"malformed message from the VM", wrap(&service.VMProtocolError{Err: &vhostuser.ProtocolError{Request: vhostuser.SetVringKick, Rule: "carries 2 fds, at most 1 allowed"}}), exitcode.VMProtocol},
		{"virtiofsd exit 1", &launch.ExitError{Status: exited(1), Flavor: virtiofsd.C}, 1},
		{"virtiofsd killed", &launch.ExitError{Status: killed(syscall.SIGKILL), Flavor: virtiofsd.C}, 128 + 9},
		{"Rust sandbox child killed: exit(-9)", &launch.ExitError{Status: exited(256 - 9), Flavor: virtiofsd.Rust}, 128 + 9},
		{"stop grace exceeded", &launch.StopTimeoutError{}, 137},
		{"anything else", errors.New("boom"), exitcode.Software},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, exitcode.For(tc.err))
		})
	}
}

func TestTableNamesEveryCode(t *testing.T) {
	var codes []string
	for _, r := range exitcode.Table {
		codes = append(codes, r.Code)
	}
	for _, c := range []int{exitcode.OK, exitcode.Usage, exitcode.Activation, exitcode.Unavailable, exitcode.Software, exitcode.NotReady, exitcode.Config} {
		assert.Contains(t, codes, fmt.Sprint(c))
	}
}

func TestExplainReadsTheTable(t *testing.T) {
	assert.Contains(t, exitcode.Explain(0), "clean end")
	assert.Contains(t, exitcode.Explain(42), "virtiofsd failed with this exit status of its own")
	assert.Contains(t, exitcode.Explain(exitcode.Config), "config:")
	assert.Contains(t, exitcode.Explain(128+15), "virtiofsd was killed by signal 15 (SIGTERM)")
	assert.Equal(t, "unknown exit status", exitcode.Explain(100))
}

// claims is an error that names its own exit status, right or wrong.
type claims int

func (c claims) Error() string { return fmt.Sprintf("claims exit status %d", int(c)) }
func (c claims) ExitCode() int { return int(c) }

func TestAnErrorClaimingAStatusOutsideOneTo255ExitsAsAnInternalError(t *testing.T) {
	// 0 would report a failure as success; a negative status or one of 256 or
	// more is truncated by exit(2) into another code's meaning.
	for _, code := range []int{0, -1, -9, 256, 256 + 78, 1 << 20} {
		assert.Equal(t, exitcode.Software, exitcode.For(claims(code)), "ExitCode() = %d", code)
	}
	assert.Equal(t, 1, exitcode.For(claims(1)))
	assert.Equal(t, 255, exitcode.For(claims(255)))
}

func TestUnavailableErrorKeepsItsCauseForErrorsIs(t *testing.T) {
	cause := errors.New("dial unix /run/dbus/system_bus_socket: no such file")
	err := fmt.Errorf("list: %w", &exitcode.UnavailableError{Err: cause})
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, exitcode.Unavailable, exitcode.For(err))
}
