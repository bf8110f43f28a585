package exitcode

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"

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
		{"clean end", nil, OK},
		{"usage", &UsageError{Msg: "bad flag"}, Usage},
		{"activation, wrapped", wrap(&activation.Error{Reason: "no socket"}), Activation},
		{"config file", &config.Error{File: "/etc/virtiofsd/vm1.conf", Line: 3, Msg: "unknown key"}, Config},
		{"option refused", &virtiofsd.OptionsError{Key: "EXTRA_ARGS", Msg: "--syslog"}, Config},
		{"binary missing", wrap(fmt.Errorf("x: %w", virtiofsd.ErrBinary)), Unavailable},
		{"systemd unreachable", &UnavailableError{Err: errors.New("no bus")}, Unavailable},
		{"never ready", &launch.NotReadyError{}, NotReady},
		{"virtiofsd exit 1", &launch.ExitError{Status: exited(1), Flavor: virtiofsd.C}, 1},
		{"virtiofsd killed", &launch.ExitError{Status: killed(syscall.SIGKILL), Flavor: virtiofsd.C}, 128 + 9},
		{"Rust sandbox child killed: exit(-9)", &launch.ExitError{Status: exited(256 - 9), Flavor: virtiofsd.Rust}, 128 + 9},
		{"stop grace exceeded", &launch.StopTimeoutError{}, 137},
		{"anything else", errors.New("boom"), Software},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, For(tc.err))
		})
	}
}

func TestTableNamesEveryCode(t *testing.T) {
	var codes []string
	for _, r := range Table {
		codes = append(codes, r.Code)
	}
	for _, c := range []int{OK, Usage, Activation, Unavailable, Software, NotReady, Config} {
		assert.Contains(t, codes, fmt.Sprint(c))
	}
}

func TestExplainReadsTheTable(t *testing.T) {
	assert.Contains(t, Explain(0), "clean end")
	assert.Contains(t, Explain(42), "virtiofsd failed with this exit status of its own")
	assert.Contains(t, Explain(Config), "config:")
	assert.Contains(t, Explain(128+15), "virtiofsd was killed by signal 15 (SIGTERM)")
	assert.Equal(t, "unknown exit status", Explain(100))
}
