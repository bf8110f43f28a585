package systemtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestStoppingTheServiceIsASuccessInEveryPhase is `systemctl stop` of an
// instance whose virtiofsd, C or Rust, has not printed its readiness line
// yet, waits for its VM, or serves it: each time the shim exits 0 and the
// unit ends inactive with Result=success, never failed (the C one exits 1
// when SIGTERM interrupts its accept()). A stop before the shim runs at all
// is systemd's own business (the job is cancelled, or the process dies of
// SIGTERM, which systemd counts as success too).
func TestStoppingTheServiceIsASuccessInEveryPhase(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		b := box(t, leg)
		bin := leg.Virtiofsd()
		// A virtiofsd slow to start: its readiness line comes 3 s late.
		slow := filepath.Join(b.Root, "slow-virtiofsd")
		require.NoError(t, os.WriteFile(slow, []byte("#!/bin/sh\nsleep 3\nexec "+bin+" \"$@\"\n"), 0o755))
		for _, phase := range []struct {
			name, instance string
			start          func(unit string)
			config         []string
		}{
			{"before the readiness line", "r", func(unit string) {
				systemctl(t, b, "start", "--no-block", unit)
				waitPhase(t, b, "r", shimstate.Starting, func(s *shimstate.State) bool { return s.VirtiofsdPID != 0 })
			}, []string{"VIRTIOFSD=" + slow, "FLAVOR=" + leg.Flavor()}},
			{"waiting for the VM", "w", func(unit string) {
				systemctl(t, b, "start", unit) // returns once READY=1
				waitPhase(t, b, "w", shimstate.Waiting)
			}, []string{"VIRTIOFSD=" + bin}},
			{"serving", "v", func(unit string) {
				session(t, b, "v") // kept open until the test ends
				waitPhase(t, b, "v", shimstate.Serving)
			}, []string{"VIRTIOFSD=" + bin}},
		} {
			t.Run(phase.name, func(t *testing.T) {
				_, err := b.AddInstance(phase.instance, phase.config...)
				require.NoError(t, err)
				enable(t, b, phase.instance)
				unit := "virtiofsd@" + phase.instance + ".service"
				phase.start(unit)

				systemctl(t, b, "stop", unit)
				p := show(t, b, unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
				want := map[string]string{"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}
				assert.Equal(t, want, p, "%s", status(b, unit))
				assert.Empty(t, virtiofsdProcesses(t, b))
				waitState(t, b, "virtiofsd@"+phase.instance+".socket", "active/listening")
			})
		}
	})
}
