package e2etest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func TestGuestUsesShareThroughSystemdSocket(t *testing.T) {
	shimbox.Legs(t, testGuestUsesShareThroughSystemdSocket)
}

func testGuestUsesShareThroughSystemdSocket(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	b, shares := newBox(t, leg, "vm1")
	share := shares["vm1"]
	hello := "hello " + rand.Text()
	require.NoError(t, os.WriteFile(filepath.Join(share, "from-host"), []byte(hello+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(share, "to-remove"), []byte("bye\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(share, "dir-to-remove", "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(share, "dir-to-remove", "sub", "f"), nil, 0o644))

	res := boot(t, b, img, guest.Spec{
		Shares: []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script: `set -e
mount -t virtiofs vm1 /mnt/vm1
cd /mnt/vm1
echo "RESULT hello=$(cat from-host)"
echo "written by the guest" > from-guest
echo "to be renamed" > old-name
mv old-name new-name
mkdir -p made/deeper
echo nested > made/deeper/file
rm to-remove
rm -r dir-to-remove
dd if=/dev/urandom of=big bs=1M count=16 2>/dev/null
echo "RESULT sha256=$(sha256sum big | cut -d' ' -f1)"
echo "RESULT listing=$(ls | tr '\n' ' ')"
cd /
umount /mnt/vm1
`,
	})
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, hello, res.Values["hello"], "the guest reads what the host wrote")
	assert.Equal(t, "big from-guest from-host made new-name ", res.Values["listing"])

	// The guest has powered off: everything it did is on the host.
	waitInactive(t, b, "vm1")
	assert.Equal(t, "written by the guest\n", readFile(t, filepath.Join(share, "from-guest")))
	assert.Equal(t, "to be renamed\n", readFile(t, filepath.Join(share, "new-name")))
	assert.NoFileExists(t, filepath.Join(share, "old-name"))
	assert.Equal(t, "nested\n", readFile(t, filepath.Join(share, "made", "deeper", "file")))
	assert.NoFileExists(t, filepath.Join(share, "to-remove"))
	assert.NoDirExists(t, filepath.Join(share, "dir-to-remove"))
	big, err := os.ReadFile(filepath.Join(share, "big"))
	require.NoError(t, err)
	assert.Len(t, big, 16<<20)
	sum := sha256.Sum256(big)
	assert.Equal(t, hex.EncodeToString(sum[:]), res.Values["sha256"], "the host reads the 16 MiB file the guest wrote")
	names, err := os.ReadDir(share)
	require.NoError(t, err)
	var listing string
	for _, n := range names {
		listing += n.Name() + " "
	}
	assert.Equal(t, res.Values["listing"], listing, "host and guest list the same names")

	// One session in the journal, with virtiofsd's readiness and connection
	// lines, and the socket still listening for the next boot.
	sessions, err := Sessions(context.Background(), b, "vm1")
	require.NoError(t, err)
	require.Len(t, sessions, 1, "%v", sessions)
	assert.True(t, sessions[0].HasVirtiofsdLine(ReadyLine), sessions[0])
	assert.True(t, sessions[0].HasVirtiofsdLine(leg.ConnectedLine()), sessions[0])
	assert.Len(t, sessions[0].VirtiofsdPIDs(), 1)
	assert.Equal(t, "listening", show(t, b, "virtiofsd@vm1.socket", "SubState"))
}
