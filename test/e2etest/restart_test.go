package e2etest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// ioAcrossRestartScript mounts vm1, says so, and waits (bounded) for the
// host to create "restarted" in the share; then it writes, reads back and
// lists the share: RESULT io=ok when all of it worked.
const ioAcrossRestartScript = `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
echo before > /mnt/vm1/before
echo E2E_MOUNTED
n=0
while [ ! -e /mnt/vm1/restarted ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
echo "RESULT saw=$([ -e /mnt/vm1/restarted ] && echo yes || echo no)"
echo after > /mnt/vm1/after && [ "$(cat /mnt/vm1/after)" = after ] && [ "$(cat /mnt/vm1/before)" = before ] &&
	echo RESULT io=ok || echo RESULT io=failed
umount /mnt/vm1
`

// TestGuestKeepsItsShareAcrossASocketRestart: the admin gives the socket to
// the kvm group (config, daemon-reload, restart of the socket) while a
// guest uses the share; the guest's I/O goes on, and once it powers off the
// socket listens again as root:kvm 0660 and the next boot is served.
func TestGuestKeepsItsShareAcrossASocketRestart(t *testing.T) {
	shimbox.Legs(t, testGuestKeepsItsShareAcrossASocketRestart)
}

func testGuestKeepsItsShareAcrossASocketRestart(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	b, shares := newBox(t, leg, "vm1")
	share := shares["vm1"]
	// The group as the box's own /etc names it (ids differ by leg).
	out, err := b.Run(context.Background(), "getent", "group", "kvm")
	if err != nil {
		t.Skipf("%s: no kvm group in the box: %v", leg, err)
	}
	gid := strings.Split(out, ":")[2]
	qemu, err := leg.QEMU(context.Background())
	require.NoError(t, err)

	done := bootMounted(t, img, guest.Spec{
		QEMU:   qemu,
		Shares: []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script: ioAcrossRestartScript,
	})

	_, err = b.AddInstance("vm1", "CACHE=auto", "SOCKET_GROUP=kvm")
	require.NoError(t, err)
	for _, args := range [][]string{{"daemon-reload"}, {"restart", "virtiofsd@vm1.socket"}} {
		out, err := b.Systemctl(context.Background(), args...)
		require.NoError(t, err, "systemctl %v: %s", args, out)
	}
	require.NoError(t, os.WriteFile(filepath.Join(share, "restarted"), nil, 0o644))

	o := <-done
	require.NoError(t, o.err)
	require.Equal(t, 0, o.res.ExitStatus, o.res.Serial)
	assert.Equal(t, "yes", o.res.Values["saw"], o.res.Serial)
	assert.Equal(t, "ok", o.res.Values["io"], "the guest's I/O after the socket's restart:\n%s", o.res.Serial)

	waitInactive(t, b, "vm1")
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result"))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s, err := unitprop.Property(context.Background(), b, "virtiofsd@vm1.socket", "SubState")
		if assert.NoError(c, err) {
			assert.Equal(c, "listening", s)
		}
	}, 30*time.Second, 20*time.Millisecond, "the socket listens again once the guest is gone")
	fi, err := os.Stat(b.Socket("vm1"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	st, ok := fi.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	assert.Equal(t, gid, strconv.Itoa(int(st.Gid)))

	res := boot(t, b, img, guest.Spec{
		Shares: []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script: "mount -t virtiofs vm1 /mnt/vm1 && echo \"RESULT after=$(cat /mnt/vm1/after)\"\n",
	})
	assert.Equal(t, "after", res.Values["after"], res.Serial)
}
