package systemtest

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	protocol "github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// stateOf waits until the shim's state file satisfies ok, and returns it.
func stateOf(t *testing.T, sock string, ok func(*shimstate.State) bool) *shimstate.State {
	t.Helper()
	path := shimstate.Path(filepath.Dir(sock), "vm1")
	var got *shimstate.State
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, err := shimstate.Read(path)
		if assert.NoError(c, err) && assert.NotNil(c, st) && assert.True(c, ok(st), "state %+v", st) {
			got = st
		}
	}, 20*time.Second, 20*time.Millisecond)
	return got
}

// reloadAnswer sends the shim a reload request (SIGHUP) and waits for its
// answer numbered seq.
func reloadAnswer(t *testing.T, pid, seq int, sock string) *shimstate.ReloadAnswer {
	t.Helper()
	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	return stateOf(t, sock, func(s *shimstate.State) bool { return s.Reload != nil && s.Reload.Seq == seq }).Reload
}

func TestReloadReplacesTheWaitingRustVirtiofsdAndRefusesASessionThatCannotBeSwapped(t *testing.T) {
	sdbox.RequireRoot(t)
	bin := fakevirtiofsd.Real(t, virtiofsd.Rust)
	share := t.TempDir()
	cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin)
	_ = notify
	waiting := stateOf(t, sock, func(s *shimstate.State) bool { return s.Phase == shimstate.Waiting && s.VirtiofsdPID != 0 })
	assert.True(t, waiting.Front, "the Rust virtiofsd can save its state: the shim is the VM's end of the socket")

	// No VM yet: the new virtiofsd waits for it instead of the old one.
	a := reloadAnswer(t, cmd.Process.Pid, 1, sock)
	require.Equal(t, shimstate.ReloadOK, a.Result, "%+v\n%s", a, stderr)
	assert.Equal(t, waiting.VirtiofsdPID, a.OldPID)
	assert.NotEqual(t, a.OldPID, a.NewPID)
	st := stateOf(t, sock, func(s *shimstate.State) bool { return s.VirtiofsdPID == a.NewPID })
	assert.Equal(t, shimstate.Waiting, st.Phase)

	// A client that negotiated nothing (no REPLY_ACK, no DEVICE_STATE):
	// refused with the reason, and the session goes on.
	c, err := vhostuser.Probe(sock, 10*time.Second)
	require.NoError(t, err, "a GET_FEATURES reply through the front, from the new virtiofsd\n%s", stderr)
	stateOf(t, sock, func(s *shimstate.State) bool { return s.Phase == shimstate.Serving })
	a = reloadAnswer(t, cmd.Process.Pid, 2, sock)
	assert.Equal(t, shimstate.ReloadRefused, a.Result)
	assert.Contains(t, a.Reason, "REPLY_ACK")
	assert.True(t, a.Kept)
	require.NoError(t, vhostuser.GetFeatures(c, 5*time.Second), "the session goes on after the refusal")

	c.Close() // the VM hangs up: the session ends, virtiofsd exits by itself
	assert.Equal(t, 0, exitOf(t, cmd, stderr), "the shim exits 0 when the VM disconnects\n%s", stderr)
	assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
}

func TestReloadWithTheCVirtiofsdSaysALiveSwapNeedsTheRustOne(t *testing.T) {
	sdbox.RequireRoot(t)
	bin := fakevirtiofsd.Real(t, virtiofsd.C)
	share := t.TempDir()
	cmd, sock, _, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin)
	waiting := stateOf(t, sock, func(s *shimstate.State) bool { return s.Phase == shimstate.Waiting && s.VirtiofsdPID != 0 })
	assert.False(t, waiting.Front)

	a := reloadAnswer(t, cmd.Process.Pid, 1, sock)
	assert.Equal(t, shimstate.ReloadRefused, a.Result)
	assert.Contains(t, a.Reason, "a live swap needs the Rust virtiofsd")
	assert.Equal(t, waiting.VirtiofsdPID, stateOf(t, sock, func(*shimstate.State) bool { return true }).VirtiofsdPID,
		"the same virtiofsd goes on")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, exitOf(t, cmd, stderr), "%s", stderr)
	_ = os.Remove(sock)
}

func TestAMalformedMessageFromTheVMEndsTheSessionWithItsOwnExitStatus(t *testing.T) {
	share := t.TempDir()
	cmd, sock, _, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+fakeRust(t))
	st := stateOf(t, sock, func(s *shimstate.State) bool { return s.Phase == shimstate.Waiting && s.VirtiofsdPID != 0 })
	require.True(t, st.Front)
	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer c.Close()
	// GET_FEATURES announcing a payload far above the protocol's limit.
	hdr := make([]byte, 12)
	binary.LittleEndian.PutUint32(hdr[0:], uint32(protocol.GetFeatures))
	binary.LittleEndian.PutUint32(hdr[4:], 1)
	binary.LittleEndian.PutUint32(hdr[8:], 1<<24)
	_, err = c.Write(hdr)
	require.NoError(t, err)

	assert.Equal(t, exitcode.VMProtocol, exitOf(t, cmd, stderr), "%s", stderr)
	assert.Contains(t, stderr.String(), "the VM sent a malformed vhost-user message")
	assert.Eventually(t, func() bool { return len(virtiofsdFor(share)) == 0 }, 10*time.Second, 20*time.Millisecond, "virtiofsd ends with the session")
}

// fakeRust is the fake Rust virtiofsd's wrapper script.
func fakeRust(t *testing.T) string {
	t.Helper()
	p, err := fakevirtiofsd.Script(t.TempDir(), "rust")
	require.NoError(t, err)
	return p
}
