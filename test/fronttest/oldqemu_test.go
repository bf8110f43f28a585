package fronttest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// debian12QEMU is Debian 12's own QEMU 7.2, on this host: it predates
// vhost-user back-end state transfer (QEMU 8.2) and negotiates no
// DEVICE_STATE.
const debian12QEMU = "/usr/bin/qemu-system-x86_64"

// TestGuestOfQEMU72KeepsItsDataWhileVirtiofsdIsSwapped: the front gives
// the Rust virtiofsd the DEVICE_STATE that QEMU 7.2 does not negotiate,
// and swaps it under the guest as under QEMU 10.
func TestGuestOfQEMU72KeepsItsDataWhileVirtiofsdIsSwapped(t *testing.T) {
	out, err := exec.Command(debian12QEMU, "--version").Output()
	require.NoError(t, err, "Debian 12's QEMU (scripts/deps.sh: qemu-system-x86)")
	require.True(t, strings.HasPrefix(string(out), "QEMU emulator version 7.2"), "want QEMU 7.2, got %q", out)

	r := bootOn(t, debian12QEMU, workload(""), nil, func(*rig) front.Config { return front.Config{} })
	st := r.front.Status()
	t.Logf("protocol features: QEMU set %#x, virtiofsd got %#x", st.Setup.ProtocolFeatures, st.Setup.BackendProtocolFeatures)
	assert.Zero(t, st.Setup.ProtocolFeatures&vhostuser.ProtoDeviceState, "QEMU 7.2 negotiates no DEVICE_STATE")
	assert.NotZero(t, st.Setup.BackendProtocolFeatures&vhostuser.ProtoDeviceState, "virtiofsd got it from the front")
	require.True(t, st.Swappable, st.Reason)
	for i := 1; i <= 5; i++ {
		r.swap(t, i)
	}
	r.finish(t, 5)
}
