package systemtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// reloads is how many times the guest's share is reloaded under it here;
// the long data-checking workload does many more.
const reloads = 5

// TestGuestKeepsItsShareAcrossReloads boots a real guest that mounts a
// share of the shipped units and keeps writing, syncing and reading back
// files while `systemctl reload` runs again and again. With the Rust
// virtiofsd (Debian 13) each reload swaps virtiofsd under the guest: a new
// virtiofsd pid each time, the same shim and session (QEMU never
// disconnected), and no error in the guest. With the C virtiofsd (Debian
// 12) the reload fails saying that a live swap needs the Rust virtiofsd,
// and the session goes on with the same virtiofsd.
func TestGuestKeepsItsShareAcrossReloads(t *testing.T) {
	shimbox.Legs(t, testGuestKeepsItsShareAcrossReloads)
}

func testGuestKeepsItsShareAcrossReloads(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	qemu, err := leg.QEMU(t.Context())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, err = b.AddInstance("rl")
	require.NoError(t, err)
	enable(t, b, "rl")
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)

	type result struct {
		res *guest.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := guest.Run(ctx, img, guest.Spec{
			QEMU:   qemu,
			Shares: []guest.Share{{Tag: "rl", Socket: b.Socket("rl")}},
			// Each round writes a file, syncs it, reads it back, renames
			// it and lists the folder, while a file stays open for
			// appending across all rounds.
			Script: `set -e
mount -t virtiofs rl /mnt/rl
exec 3>>/mnt/rl/held.log
i=0
while [ $i -lt 150 ]; do
  echo "round $i" > /mnt/rl/f.tmp
  sync /mnt/rl/f.tmp
  [ "$(cat /mnt/rl/f.tmp)" = "round $i" ] || { echo "RESULT bad=$i"; exit 1; }
  mv /mnt/rl/f.tmp /mnt/rl/f.$i
  ls /mnt/rl >/dev/null
  echo "$i" >&3
  i=$((i+1))
  sleep 0.1
done
exec 3>&-
[ "$(wc -l < /mnt/rl/held.log)" = 150 ] || { echo "RESULT bad=held"; exit 1; }
echo "RESULT done=yes"
`,
			Timeout: 3 * time.Minute,
		})
		done <- result{res, err}
	}()

	first := waitPhase(t, b, "rl", shimstate.Serving)
	assert.Equal(t, leg.Rust(), first.Front, "the front runs where virtiofsd can save its state")
	pids := map[int]bool{first.VirtiofsdPID: true}
	last := first
	for i := 1; i <= reloads; i++ {
		out, err := b.Systemctl(ctx, "reload", "virtiofsd@rl.service")
		st, serr := b.LiveState(ctx, "rl")
		require.NoError(t, serr)
		require.NotNil(t, st)
		assert.Equal(t, first.ShimPID, st.ShimPID, "the same shim")
		assert.Equal(t, first.Session, st.Session, "the same session: QEMU never disconnected")
		if !leg.Rust() {
			require.Error(t, err, "a reload with the C virtiofsd fails")
			require.NotNil(t, st.Reload)
			assert.Equal(t, shimstate.ReloadRefused, st.Reload.Result)
			assert.Contains(t, st.Reload.Reason, "a live swap needs the Rust virtiofsd")
			assert.Equal(t, first.VirtiofsdPID, st.VirtiofsdPID, "the same virtiofsd goes on")
			assert.Contains(t, status(b, "virtiofsd@rl.service"), "a live swap needs the Rust virtiofsd")
			break
		}
		require.NoError(t, err, "reload %d: %s\n%s", i, out, status(b, "virtiofsd@rl.service"))
		require.NotNil(t, st.Reload)
		assert.Equal(t, shimstate.ReloadOK, st.Reload.Result, "%+v", st.Reload)
		assert.Equal(t, last.VirtiofsdPID, st.Reload.OldPID)
		assert.False(t, pids[st.VirtiofsdPID], "reload %d: a new virtiofsd pid (%d)", i, st.VirtiofsdPID)
		assert.Equal(t, i, st.Handovers)
		assert.Contains(t, show(t, b, "virtiofsd@rl.service", "StatusText")["StatusText"], fmt.Sprintf("(virtiofsd pid %d)", st.VirtiofsdPID),
			"STATUS= names the new virtiofsd")
		pids[st.VirtiofsdPID] = true
		last = st
	}

	r := <-done
	require.NoError(t, r.err, status(b, "virtiofsd@rl.service"))
	require.Equal(t, 0, r.res.ExitStatus, r.res.Serial)
	assert.Equal(t, "yes", r.res.Values["done"], r.res.Serial)
	assert.NotContains(t, r.res.Serial, "Input/output error")
	if leg.Rust() {
		n := 0
		for _, e := range journal(t, b, "-u", "virtiofsd@rl.service") {
			if strings.Contains(e["MESSAGE"], "virtiofsd swapped under the running VM") {
				n++
			}
		}
		assert.Equal(t, reloads, n, "one journal line per handover")
	}
}
