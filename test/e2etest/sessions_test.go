package e2etest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/demoguest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func TestGuestBootedTwiceGetsTwoSessions(t *testing.T) {
	shimbox.Legs(t, testGuestBootedTwiceGetsTwoSessions)
}

func testGuestBootedTwiceGetsTwoSessions(t *testing.T, leg shimbox.Platform) {
	requireGuest(t, leg)
	b, shares := newBox(t, leg, "vm1")
	share := shares["vm1"]
	require.NoError(t, os.WriteFile(filepath.Join(share, demoguest.HostFile), []byte("hello from the host\n"), 0o644))
	ctx := context.Background()

	// Two boots back to back: the second QEMU connects while the first
	// session may still be ending; socket activation serves it anyway.
	var console bytes.Buffer
	first, err := demoguest.Boot(ctx, b, "vm1", &console)
	require.NoError(t, err)
	assert.Equal(t, first.Serial, console.String(), "the console gets the serial output")
	second, err := demoguest.Boot(ctx, b, "vm1", nil)
	require.NoError(t, err)

	t.Logf("guests ran in %s and %s", first.Duration.Round(time.Millisecond), second.Duration.Round(time.Millisecond))
	for _, res := range []*guest.Result{first, second} {
		assert.Equal(t, "hello from the host", res.Values["read"])
		assert.Equal(t, demoguest.GuestFile, res.Values["wrote"])
		assert.Equal(t, demoguest.GuestFile+" "+demoguest.HostFile+" ", res.Values["listing"])
	}
	waitInactive(t, b, "vm1")
	got := readFile(t, filepath.Join(share, demoguest.GuestFile))
	assert.True(t, strings.HasPrefix(got, "hello from the guest, kernel "+first.Values["kernel"]), got)

	sessions, err := Sessions(ctx, b, "vm1")
	require.NoError(t, err)
	require.Len(t, sessions, 2, "%v", sessions)
	for _, s := range sessions {
		assert.True(t, s.HasVirtiofsdLine(ReadyLine), s)
		assert.True(t, s.HasVirtiofsdLine(leg.ConnectedLine()), s)
		assert.Len(t, s.VirtiofsdPIDs(), 1, s)
	}
	assert.NotEqual(t, sessions[0].InvocationID, sessions[1].InvocationID)
	assert.NotEqual(t, sessions[0].VirtiofsdPIDs(), sessions[1].VirtiofsdPIDs())
	// Sessions come from socket activation, not restarts.
	assert.Equal(t, "0", show(t, b, "virtiofsd@vm1.service", "NRestarts"))
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result"))
}

func TestGuestWithTwoSharesSeesOnlyItsOwnDirectories(t *testing.T) {
	shimbox.Legs(t, testGuestWithTwoSharesSeesOnlyItsOwnDirectories)
}

func testGuestWithTwoSharesSeesOnlyItsOwnDirectories(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	b, shares := newBox(t, leg, "vm1", "vm2")
	for name, dir := range shares {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "only-in-"+name), nil, 0o644))
	}

	res := boot(t, b, img, guest.Spec{
		Shares: []guest.Share{
			{Tag: "vm1", Socket: b.Socket("vm1")},
			{Tag: "vm2", Socket: b.Socket("vm2")},
		},
		Script: `set -e
mount -t virtiofs vm1 /mnt/vm1
mount -t virtiofs vm2 /mnt/vm2
echo "RESULT vm1=$(ls /mnt/vm1 | tr '\n' ' ')"
echo "RESULT vm2=$(ls /mnt/vm2 | tr '\n' ' ')"
echo one > /mnt/vm1/written-to-vm1
echo two > /mnt/vm2/written-to-vm2
echo "RESULT vm1-after=$(ls /mnt/vm1 | tr '\n' ' ')"
echo "RESULT vm2-after=$(ls /mnt/vm2 | tr '\n' ' ')"
umount /mnt/vm1 /mnt/vm2
`,
	})
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "only-in-vm1 ", res.Values["vm1"])
	assert.Equal(t, "only-in-vm2 ", res.Values["vm2"])
	assert.Equal(t, "only-in-vm1 written-to-vm1 ", res.Values["vm1-after"])
	assert.Equal(t, "only-in-vm2 written-to-vm2 ", res.Values["vm2-after"])

	for _, name := range []string{"vm1", "vm2"} {
		waitInactive(t, b, name)
		entries, err := os.ReadDir(shares[name])
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		assert.Equal(t, []string{"only-in-" + name, "written-to-" + name}, names)
		sessions, err := Sessions(context.Background(), b, name)
		require.NoError(t, err)
		require.Len(t, sessions, 1, "one session per instance: %v", sessions)
		assert.True(t, sessions[0].HasVirtiofsdLine(leg.ConnectedLine()), sessions[0])
		for _, e := range sessions[0].Entries {
			if e.Identifier == "virtiofsd" {
				assert.Equal(t, name, e.Instance, "VIRTIOFSD_INSTANCE of %q", e.Message)
			}
		}
	}
}
