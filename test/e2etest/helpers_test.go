package e2etest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

var (
	imageOnce sync.Once
	image     *guest.Image
	imageErr  error
)

// requireGuest skips, saying why, unless this host can run the tests of
// the leg, and returns the guest image (built on the host, booted by either
// leg's QEMU), prepared once for the whole package.
func requireGuest(t *testing.T, leg shimbox.Platform) *guest.Image {
	t.Helper()
	sdbox.RequireRoot(t)
	if leg == shimbox.Debian12 {
		for _, bin := range []string{"qemu-system-x86_64", virtiofsd.CVirtiofsd} {
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s not installed (apt-get install qemu-system-x86 qemu-system-common): %v", bin, err)
			}
		}
	}
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		image, imageErr = guest.Prepare(ctx, "")
	})
	require.NoError(t, imageErr, "prepare the guest image")
	return image
}

// newBox boots a private systemd with the project's units and enables
// virtiofsd@<name>.socket for each instance, each with its own share under
// b.Root; it returns the box and the shares by instance.
func newBox(t *testing.T, leg shimbox.Platform, instances ...string) (*shimbox.Box, map[string]string) {
	t.Helper()
	return newBoxWith(t, leg, []string{"CACHE=auto"}, instances...)
}

// newBoxWith is newBox with conf as each instance's config lines (beside
// SHARED_DIR).
func newBoxWith(t *testing.T, leg shimbox.Platform, conf []string, instances ...string) (*shimbox.Box, map[string]string) {
	t.Helper()
	b := shimbox.New(t, shimbox.Options{Name: "e2e", Platform: leg})
	shares := map[string]string{}
	for _, name := range instances {
		dir, err := b.AddInstance(name, conf...)
		require.NoError(t, err)
		shares[name] = dir
		out, err := b.Systemctl(context.Background(), "enable", "--now", "virtiofsd@"+name+".socket")
		require.NoError(t, err, out)
	}
	return b, shares
}

// boot runs the guest under the QEMU of b's leg and requires that it booted
// and ran its script to the end (whatever the exit status).
func boot(t *testing.T, b *shimbox.Box, img *guest.Image, spec guest.Spec) *guest.Result {
	t.Helper()
	if spec.Timeout == 0 {
		spec.Timeout = 60 * time.Second
	}
	var err error
	spec.QEMU, err = b.Platform.QEMU(context.Background())
	require.NoError(t, err)
	res, err := guest.Run(context.Background(), img, spec)
	require.NoError(t, err)
	t.Logf("guest ran in %s", res.Duration.Round(time.Millisecond))
	return res
}

// show returns one property of a unit in the box, failing the test when
// systemctl does.
func show(t *testing.T, b *shimbox.Box, unit, prop string) string {
	t.Helper()
	v, err := unitprop.Property(context.Background(), b, unit, prop)
	require.NoError(t, err)
	return v
}

// waitInactive waits for virtiofsd@<instance>.service to end its session:
// virtiofsd exits when its guest disconnects, and the shim with it.
func waitInactive(t *testing.T, b *shimbox.Box, instance string) {
	t.Helper()
	unit := "virtiofsd@" + instance + ".service"
	_, err := unitprop.WaitInactive(context.Background(), b, unit, 20*time.Second)
	require.NoError(t, err, "after its guest powered off")
}

// readFile reads a file on the host.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
