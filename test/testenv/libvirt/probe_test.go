package libvirt

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// probeBox plays a box whose libvirt's first probe of QEMU hangs: the first
// `timeout ... virsh domcapabilities` exits as timeout(1) does when it kills
// its command (124), later ones answer. It records every command.
type probeBox struct {
	hangs int // probes that hang before one answers
	calls []string
}

func (b *probeBox) Run(ctx context.Context, name string, args ...string) (string, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	b.calls = append(b.calls, line)
	if strings.Contains(line, "domcapabilities") && b.hangs > 0 {
		b.hangs--
		return "", exec.CommandContext(ctx, "sh", "-c", "exit 124").Run()
	}
	return "", nil
}

func (b *probeBox) Systemctl(ctx context.Context, args ...string) (string, error) {
	return b.Run(ctx, "systemctl", args...)
}
func (b *probeBox) Path(inside string) string                     { return inside }
func (b *probeBox) AddInstance(string, ...string) (string, error) { return "", nil }
func (b *probeBox) Configure(string, string) error                { return nil }
func (b *probeBox) Journal(context.Context, ...string) ([]shimbox.JournalEntry, error) {
	return nil, nil
}

// A probe that hangs once is killed, libvirtd restarted, and the second
// probe's answer is enough.
func TestHungProbeIsKilledAndRetriedOnce(t *testing.T) {
	b := &probeBox{hangs: 1}
	require.NoError(t, probeQEMU(context.Background(), b))
	require.Len(t, b.calls, 4, "%q", b.calls)
	assert.Contains(t, b.calls[0], "timeout --kill-after=5 90 virsh -c qemu:///system domcapabilities")
	assert.Contains(t, b.calls[1], "pkill -KILL -f")
	assert.Equal(t, "systemctl restart libvirtd.service", b.calls[2])
	assert.Contains(t, b.calls[3], "domcapabilities")
}

// A second hang fails, saying what hung.
func TestProbeThatHangsTwiceFails(t *testing.T) {
	b := &probeBox{hangs: 2}
	err := probeQEMU(context.Background(), b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tried twice")
	assert.Contains(t, err.Error(), "no answer within 1m30s")
}
