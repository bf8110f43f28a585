package e2etest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// ioAcrossServiceRestartsScript mounts vm1, holds one file open for
// reading and one for appending, and until the host creates "done" renames
// a counter into place, appends it and reads it back every 0.1 s: RESULT
// bad=0 when every step worked, and the held files still work at the end.
const ioAcrossServiceRestartsScript = `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
echo before > /mnt/vm1/before
exec 3>>/mnt/vm1/appended
exec 4</mnt/vm1/before
echo E2E_MOUNTED
n=0; bad=0
while [ ! -e /mnt/vm1/done ] && [ $n -lt 1500 ]; do
	n=$((n+1))
	{ echo $n > /mnt/vm1/tmp && mv /mnt/vm1/tmp /mnt/vm1/count; } || bad=$((bad+1))
	echo $n >&3 || bad=$((bad+1))
	[ "$(cat /mnt/vm1/count)" = "$n" ] || bad=$((bad+1))
	sleep 0.1
done
read held <&4
echo "RESULT saw=$([ -e /mnt/vm1/done ] && echo yes || echo no)"
echo "RESULT held=$held"
echo "RESULT appended=$([ "$(wc -l < /mnt/vm1/appended)" = "$n" ] && echo ok || echo short)"
echo "RESULT bad=$bad"
exec 3>&- 4<&-
umount /mnt/vm1
`

// TestGuestKeepsItsShareAcrossFiveServiceRestarts is issue 24's restart
// test: with the front (the Rust virtiofsd, QEMU 10), five `systemctl
// restart virtiofsd@vm1.service` under a guest that uses its share each
// get a new shim and a new virtiofsd, and the guest sees no error, its held
// files and data intact. On Debian 12 (systemd 252) the instance runs
// Debian 13's Rust virtiofsd, and the guest Debian 12's own QEMU 7.2, which
// negotiates no DEVICE_STATE: the front asks virtiofsd for it itself.
func TestGuestKeepsItsShareAcrossFiveServiceRestarts(t *testing.T) {
	shimbox.Legs(t, testGuestKeepsItsShareAcrossFiveServiceRestarts)
}

func testGuestKeepsItsShareAcrossFiveServiceRestarts(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	ctx := context.Background()
	b, shares := newBox(t, leg, "vm1")
	share := shares["vm1"]
	qemu, err := leg.QEMU(ctx)
	require.NoError(t, err)
	if !leg.Rust() {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		tree, err := distro.Debian13(tctx)
		require.NoError(t, err, "the Debian 13 tree, for its Rust virtiofsd")
		rust, err := tree.RustVirtiofsd()
		require.NoError(t, err)
		_, err = b.AddInstance("vm1", "CACHE=auto", "VIRTIOFSD="+rust)
		require.NoError(t, err)
	}

	done := bootMounted(t, img, guest.Spec{
		QEMU:    qemu,
		Shares:  []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script:  ioAcrossServiceRestartsScript,
		Timeout: 240 * time.Second,
	})
	count := func() int {
		b, _ := os.ReadFile(filepath.Join(share, "count"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	// guestWrites waits until the guest's counter moves past n: its I/O
	// goes on.
	guestWrites := func(n int, what string) int {
		t.Helper()
		require.Eventually(t, func() bool { return count() > n+2 }, 60*time.Second, 50*time.Millisecond, "the guest's I/O stopped %s", what)
		return count()
	}
	pids := func() (int, int) {
		t.Helper()
		var shim, vfs int
		require.Eventually(t, func() bool {
			st, err := b.LiveState(ctx, "vm1")
			if err != nil || st == nil || st.Phase != "serving" || st.VirtiofsdPID == 0 {
				return false
			}
			shim, vfs = st.ShimPID, st.VirtiofsdPID
			return true
		}, 30*time.Second, 50*time.Millisecond, "virtiofsd@vm1 does not serve the VM")
		return shim, vfs
	}

	n := guestWrites(0, "before any restart")
	shim, vfs := pids()
	shims, virtiofsds := map[int]bool{shim: true}, map[int]bool{vfs: true}
	for i := 1; i <= 5; i++ {
		out, err := b.Systemctl(ctx, "restart", "virtiofsd@vm1.service")
		require.NoError(t, err, "restart %d: %s", i, out)
		shim, vfs = pids()
		assert.False(t, shims[shim], "restart %d: a new shim (pid %d)", i, shim)
		assert.False(t, virtiofsds[vfs], "restart %d: a new virtiofsd (pid %d)", i, vfs)
		shims[shim], virtiofsds[vfs] = true, true
		n = guestWrites(n, "after restart "+strconv.Itoa(i))
	}
	require.NoError(t, os.WriteFile(filepath.Join(share, "done"), nil, 0o644))

	o := <-done
	require.NoError(t, o.err)
	require.Equal(t, 0, o.res.ExitStatus, o.res.Serial)
	assert.Equal(t, "yes", o.res.Values["saw"], o.res.Serial)
	assert.Equal(t, "0", o.res.Values["bad"], "the guest saw no error:\n%s", o.res.Serial)
	assert.Equal(t, "before", o.res.Values["held"], "the file held open for reading still reads")
	assert.Equal(t, "ok", o.res.Values["appended"], "every append of the guest is in the file")
	st, err := b.State("vm1")
	require.NoError(t, err)
	if assert.NotNil(t, st) {
		assert.Equal(t, 5, st.Handovers, "the session counts the five restarts")
	}
}

// readUntilCutScript mounts vm1 and reads it every 0.2 s: once its
// vhost-user connection is gone the read hangs, and the guest with it.
const readUntilCutScript = `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
echo before > /mnt/vm1/before
echo E2E_MOUNTED
while cat /mnt/vm1/before >/dev/null; do sleep 0.2; done
`

// TestStopStillEndsTheSessionWithTheFront: `systemctl stop` of a service
// whose session could be kept does not keep it. QEMU sees its vhost-user
// connection end, as before the front, the store stays empty, and the
// journal has no handover. The guest's share then hangs (QEMU never
// reconnects), so the guest is killed at its timeout.
func TestStopStillEndsTheSessionWithTheFront(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		if !leg.Rust() {
			t.Skip("the front needs the Rust virtiofsd and QEMU 10: the Debian 13 leg covers it")
		}
		img := requireGuest(t, leg)
		ctx := context.Background()
		b, _ := newBox(t, leg, "vm1")
		qemu, err := leg.QEMU(ctx)
		require.NoError(t, err)
		done := bootMounted(t, img, guest.Spec{
			QEMU:    qemu,
			Shares:  []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
			Script:  readUntilCutScript,
			Timeout: 40 * time.Second,
		})
		out, err := b.Systemctl(ctx, "stop", "virtiofsd@vm1.service")
		require.NoError(t, err, out)
		o := <-done
		require.Error(t, o.err, "the guest's share hangs once its connection is gone")
		assert.Contains(t, o.err.Error(), "Unexpected end-of-file", "QEMU sees its vhost-user connection end")
		assert.Equal(t, "0", show(t, b, "virtiofsd@vm1.service", "NFileDescriptorStore"), "nothing is kept")
		journal, err := b.Run(ctx, "journalctl", "-u", "virtiofsd@vm1.service", "--no-pager")
		require.NoError(t, err)
		assert.NotContains(t, journal, "kept in systemd's fd store")
	})
}
