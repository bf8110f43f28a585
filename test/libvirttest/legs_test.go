package libvirttest

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/libvirt"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// TestLibvirt runs every scenario on each platform leg, in one private
// systemd with the project installed: Debian 12's libvirt 9.0, QEMU 7.2 and
// C virtiofsd (this host's), and Debian 13's libvirt 11, QEMU 10 and Rust
// virtiofsd (its tree, the project installed from the .deb).
func TestLibvirt(t *testing.T) { shimbox.Legs(t, testLibvirt) }

func testLibvirt(t *testing.T, p shimbox.Platform) {
	if p == shimbox.Debian12 {
		// A missing piece fails as root: scripts/deps.sh (make test) installs them.
		for _, bin := range []string{"virsh", "/usr/sbin/libvirtd", "qemu-system-x86_64", virtiofsd.CVirtiofsd, "logger", "setpriv"} {
			_, err := exec.LookPath(bin)
			require.NoError(t, err, "%s missing: run scripts/deps.sh (apt-get install libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 qemu-system-common)", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err, "prepare the guest image")

	b := shimbox.New(t, shimbox.Options{Name: "libvirt", Overlay: libvirt.Overlays(), Platform: p})
	if p != shimbox.Debian12 {
		// The tree's recipe (distro.Debian13Recipe) brings them.
		for _, bin := range []string{"virsh", "/usr/sbin/libvirtd", "qemu-system-x86_64", p.Virtiofsd(), "logger", "setpriv"} {
			_, err := b.Run(ctx, "sh", "-c", "command -v "+bin)
			require.NoError(t, err, "%s: %s missing in the tree: add its package to distro.Debian13Recipe", p, bin)
		}
	}
	start := time.Now()
	version, err := libvirt.StartLibvirt(ctx, b)
	require.NoError(t, err)
	t.Logf("libvirt %s answered in %s", version, time.Since(start).Round(time.Millisecond))
	leg := &libvirt.Leg{Name: p.String(), QEMUUser: "libvirt-qemu", SocketGroup: "libvirt-qemu", Image: img, LibvirtVersion: version}
	for _, s := range Scenarios() {
		t.Run(s.Name, func(t *testing.T) { s.Run(t, b, leg) })
	}
}
