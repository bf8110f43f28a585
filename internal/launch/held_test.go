package launch

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// TestAcceptedClientIsSeenBeforeItsLineIsRead: a process holding only the
// listening socket has no client; one that also holds an accepted
// connection has, whatever its lines say (release decides on this).
func TestAcceptedClientIsSeenBeforeItsLineIsRead(t *testing.T) {
	dir := testdir.Short(t)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	require.NoError(t, err)
	defer l.Close()
	lf, err := l.File()
	require.NoError(t, err)
	defer lf.Close()

	start := func(files ...*os.File) int {
		cmd := exec.Command("sleep", "60")
		cmd.ExtraFiles = files
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd.Process.Pid
	}
	waiting := start(lf)
	assert.False(t, heldClient(waiting, lf), "only the listening socket: no client")

	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer c.Close()
	a, err := l.AcceptUnix()
	require.NoError(t, err)
	af, err := a.File()
	require.NoError(t, err)
	a.Close()
	defer af.Close()
	serving := start(lf, af)
	assert.True(t, heldClient(serving, lf), "an accepted connection is a client")
	assert.False(t, heldClient(0, lf), "no virtiofsd")
}
