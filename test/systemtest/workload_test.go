package systemtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestGuestWorkloadReportsEveryOperation boots a real guest that runs the
// data-path benchmark's workload (test/guestload) at tiny sizes on two
// instances of the shipped units, CACHE=auto and CACHE=never, as "make
// bench" does at full size: every operation group reports success. No
// timing is asserted.
func TestGuestWorkloadReportsEveryOperation(t *testing.T) {
	shimbox.Legs(t, testGuestWorkloadReportsEveryOperation)
}

func testGuestWorkloadReportsEveryOperation(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	qemu, err := leg.QEMU(t.Context())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "guestload")
	require.NoError(t, guestload.Build(ctx, bin))
	program, err := os.ReadFile(bin)
	require.NoError(t, err)

	caches := []string{"auto", "never"}
	for _, c := range caches {
		_, err := b.AddInstance("wl-"+c, "CACHE="+c)
		require.NoError(t, err)
		enable(t, b, "wl-"+c)
	}
	p := guestload.Tiny()
	args := fmt.Sprintf("-files %d -tree %d -stream-mib %d -pause 0", p.Files, p.TreeEntries, p.StreamMiB)
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	res, err := guest.Run(ctx, img, guest.Spec{
		QEMU:   qemu,
		Shares: []guest.Share{{Tag: "auto", Socket: b.Socket("wl-auto")}, {Tag: "never", Socket: b.Socket("wl-never")}},
		Files:  map[string][]byte{"bin/guestload": program},
		Script: `set -e
mount -t virtiofs auto /mnt/auto
mount -t virtiofs never /mnt/never
guestload -dir /mnt/auto -share auto ` + args + `
guestload -dir /mnt/never -share never -groups stream ` + args + `
echo "RESULT done=yes"
`,
		Timeout: 2 * time.Minute,
	})
	if err != nil {
		t.Log(status(b, "virtiofsd@wl-auto.service"))
		t.Log(status(b, "virtiofsd@wl-never.service"))
	}
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "yes", res.Values["done"])

	got := guestload.Results(guestload.ParseRecords(res.Serial))
	want := map[string][]string{"auto": guestload.Groups, "never": guestload.StreamGroups}
	n := 0
	for share, groups := range want {
		for _, g := range groups {
			r, ok := got[share+"/"+g]
			if assert.True(t, ok, "no result for %s/%s\n%s", share, g, res.Serial) {
				assert.True(t, r.OK, "%s/%s: %s", share, g, r.Error)
				assert.Positive(t, r.N, "%s/%s", share, g)
				assert.True(t, r.Dropped, "%s/%s ran with the guest's caches", share, g)
			}
			n++
		}
	}
	assert.Len(t, got, n)
	t.Logf("guest ran in %s", res.Duration)
	// What the workload made for its groups is gone; what it prepared stays.
	for _, c := range caches {
		dir := filepath.Join(b.Root, "wl-"+c)
		assert.NoFileExists(t, filepath.Join(dir, "stream.bin"))
		assert.NoDirExists(t, filepath.Join(dir, "meta"))
	}
	assert.FileExists(t, filepath.Join(b.Root, "wl-auto", "tree.done"))
}
