package systemtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestGuestReadsAndWritesTwoInstancesThroughTheirSockets boots a real guest
// against two instances of the hardened units: each share is mounted
// through the systemd-owned socket, read and written, and each instance
// serves its own directory.
func TestGuestReadsAndWritesTwoInstancesThroughTheirSockets(t *testing.T) {
	shimbox.Legs(t, testGuestReadsAndWritesTwoInstancesThroughTheirSockets)
}

func testGuestReadsAndWritesTwoInstancesThroughTheirSockets(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	qemu, err := leg.QEMU(t.Context())
	require.NoError(t, err)
	if qemu == "" {
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			t.Fatalf("qemu-system-x86_64 not installed: run make test (scripts/deps.sh) or apt-get install qemu-system-x86: %v", err)
		}
	}
	dirs := map[string]string{}
	for _, inst := range []string{"x", "y"} {
		dir, err := b.AddInstance(inst)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("from "+inst+"\n"), 0o644))
		dirs[inst] = dir
		enable(t, b, inst)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	res, err := guest.Run(ctx, img, guest.Spec{
		QEMU:   qemu,
		Shares: []guest.Share{{Tag: "x", Socket: b.Socket("x")}, {Tag: "y", Socket: b.Socket("y")}},
		Script: `set -e
for tag in x y; do
	mount -t virtiofs $tag /mnt/$tag
	(umask 002 && echo mode >/mnt/$tag/umask)
	echo "RESULT read_$tag=$(cat /mnt/$tag/hello)"
	echo "written by the guest" >/mnt/$tag/from-guest
	mkdir /mnt/$tag/newdir
	mv /mnt/$tag/from-guest /mnt/$tag/newdir/moved
	rm /mnt/$tag/hello
	# What the hardening must leave possible: device nodes and set-id bits.
	mknod /mnt/$tag/null c 1 3
	echo suid >/mnt/$tag/suid
	chmod 4755 /mnt/$tag/suid
	sync
done
echo "RESULT done=yes"
`,
	})
	if err != nil {
		t.Log(status(b, "virtiofsd@x.service"))
		t.Log(status(b, "virtiofsd@y.service"))
	}
	require.NoError(t, err)
	t.Logf("guest ran in %s", res.Duration)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "from x", res.Values["read_x"])
	assert.Equal(t, "from y", res.Values["read_y"])
	assert.Equal(t, "yes", res.Values["done"])
	for inst, dir := range dirs {
		got, err := os.ReadFile(filepath.Join(dir, "newdir", "moved"))
		assert.NoError(t, err, inst)
		assert.Equal(t, "written by the guest\n", string(got), inst)
		assert.NoFileExists(t, filepath.Join(dir, "hello"), inst)
		if fi, err := os.Stat(filepath.Join(dir, "null")); assert.NoError(t, err, inst) {
			assert.Equal(t, os.ModeDevice|os.ModeCharDevice, fi.Mode().Type(), inst)
		}
		if fi, err := os.Stat(filepath.Join(dir, "suid")); assert.NoError(t, err, inst) {
			assert.Equal(t, os.ModeSetuid, fi.Mode()&os.ModeSetuid, inst)
		}
		// The guest's umask decides a new file's mode, not the service's.
		if fi, err := os.Stat(filepath.Join(dir, "umask")); assert.NoError(t, err, inst) {
			assert.Equal(t, os.FileMode(0o664), fi.Mode().Perm(), inst)
		}
	}
	// The guest powered off: each session ended cleanly and its socket
	// listens again.
	for inst := range dirs {
		waitState(t, b, "virtiofsd@"+inst+".service", "inactive/dead")
		assert.Equal(t, "success", show(t, b, "virtiofsd@"+inst+".service", "Result")["Result"])
		assert.Equal(t, "active/listening", state(t, b, "virtiofsd@"+inst+".socket"))
		// No hardening error was logged on the way.
		for _, m := range shimbox.Messages(journal(t, b, "-u", "virtiofsd@"+inst+".service", "-p", "err")) {
			assert.False(t, strings.Contains(m, "failed"), "error in the journal: %s", m)
		}
	}
}
