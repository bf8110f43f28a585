package systemtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"libvirt.org/go/libvirtxml"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/libvirt"
)

// TestRootlessLibvirtSessionGuest follows docs/rootless.md's libvirt session mode:
// the user's own libvirt (qemu:///session, started by virsh as the user)
// boots a domain whose <filesystem> names the user instance's socket with
// <source socket=...>, and the guest reads and writes the share.
func TestRootlessLibvirtSessionGuest(t *testing.T) {
	for _, tool := range []string{"virsh", "libvirtd", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil && os.Geteuid() == 0 {
			t.Fatalf("%s not installed (apt-get install libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86): %v", tool, err)
		}
	}
	for _, leg := range rootlessLegs {
		t.Run(leg.name, func(t *testing.T) {
			ctx, b, rust, u := leg.bootWithUser(t)
			share, err := u.Share("vm1")
			require.NoError(t, err)
			configureRootless(t, u, "vm1", share, rust)
			userctl(t, u, "enable", "--now", "virtiofsd@vm1.socket")

			img, err := guest.Prepare(ctx, "")
			require.NoError(t, err)
			img = userImage(t, b, img)
			work := filepath.Join(u.Home, "vm")
			require.NoError(t, os.MkdirAll(work, 0o755))
			initrd, serial := filepath.Join(work, "initramfs.cpio"), filepath.Join(work, "serial.log")
			require.NoError(t, guest.WriteInitramfs(initrd, img, guest.Spec{
				Shares: []guest.Share{{Tag: "vm1", Socket: u.Socket("vm1")}},
				Script: `set -e
mount -t virtiofs vm1 /mnt/vm1
echo "through libvirt" >/mnt/vm1/from-guest
sync
echo "RESULT done=yes"
`,
			}))
			// docs/rootless.md's session-mode domain: the user instance's socket
			// as an externally launched virtiofsd, in the test guest that
			// libvirttest defines for the system instances.
			xml, err := libvirt.Domain{
				Name:          "vm1",
				Filesystems:   []libvirtxml.DomainFilesystem{domainxml.Filesystem(u.Socket("vm1"), "vm1")},
				MemoryBacking: domainxml.MemoryBacking(),
			}.XML(img.Kernel, initrd, serial)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(work, "vm1.xml"), []byte(xml), 0o644))
			require.NoError(t, exec.Command("chown", "-R", strconv.Itoa(u.UID)+":"+strconv.Itoa(u.GID), work).Run())

			// Every call bounded inside the box, so that a libvirt that
			// hangs fails the test rather than holding the run.
			virsh := func(args ...string) (string, error) {
				return u.Run(ctx, "timeout", append([]string{"--kill-after=5", "180", "virsh", "-c", "qemu:///session"}, args...)...)
			}
			// libvirt probes QEMU's capabilities at the first call that needs
			// them. Once (QEMU 7.2) the probe's QEMU blocked in accept() on
			// its QMP socket for good (see libvirt.probeQEMU): probe first,
			// bounded, and after a hang kill the user's session daemon and its
			// probe and try once more.
			if _, err := u.Run(ctx, "timeout", "--kill-after=5", "90", "virsh", "-c", "qemu:///session", "domcapabilities", "--virttype", "qemu"); err != nil {
				t.Logf("libvirt's first probe of QEMU failed, trying once more: %v", err)
				_, _ = u.Run(ctx, "pkill", "-KILL", "-f", "^[^ ]*qemu-system-[^ ]* .*-machine none")
				_, _ = u.Run(ctx, "pkill", "-KILL", "-u", strconv.Itoa(u.UID), "-x", "libvirtd")
				_, err = u.Run(ctx, "timeout", "--kill-after=5", "90", "virsh", "-c", "qemu:///session", "domcapabilities", "--virttype", "qemu")
				require.NoError(t, err, "libvirt's probe of QEMU's capabilities, tried twice")
			}
			_, err = virsh("define", filepath.Join(work, "vm1.xml"))
			require.NoError(t, err)
			_, err = virsh("start", "vm1")
			require.NoError(t, err, "%s", xml)
			off := assert.EventuallyWithT(t, func(c *assert.CollectT) {
				out, err := virsh("domstate", "vm1")
				if assert.NoError(c, err) {
					assert.Equal(c, "shut off", strings.TrimSpace(out))
				}
			}, 90*time.Second, 200*time.Millisecond, "the guest powers off after its script")
			log, _ := os.ReadFile(serial)
			if !off {
				_, _ = virsh("destroy", "vm1")
			}
			require.True(t, off, "the guest powers off after its script\n%s", log)
			res, err := guest.ParseSerial(string(log))
			require.NoError(t, err)
			assert.Equal(t, 0, res.ExitStatus)
			assert.Equal(t, "yes", res.Values["done"])
			got, err := os.ReadFile(filepath.Join(share, "from-guest"))
			require.NoError(t, err)
			assert.Equal(t, "through libvirt\n", string(got))
			waitState(t, u, "virtiofsd@vm1.service", "inactive/dead")
			assert.Equal(t, "success", show(t, u, "virtiofsd@vm1.service", "Result")["Result"])
			_, err = virsh("undefine", "vm1")
			assert.NoError(t, err)
		})
	}
}
