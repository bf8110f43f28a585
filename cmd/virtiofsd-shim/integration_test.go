package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/peer"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/shimbox"
)

// lockedBuffer collects the shim's stderr while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// activated starts the built shim the way systemd does (peer.Activated),
// with NOTIFY_SOCKET a datagram socket the test reads.
func activated(t *testing.T, args ...string) (cmd *exec.Cmd, sock string, notify <-chan peer.Datagram, stderr *lockedBuffer) {
	t.Helper()
	sdbox.RequireRoot(t) // the C virtiofsd's namespace sandbox needs root
	if _, err := os.Stat(launch.CVirtiofsd); err != nil {
		t.Fatalf("the real C virtiofsd is missing (%v): apt-get install qemu-system-common (make test does)", err)
	}
	bin, err := shimbox.Binary()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "shimit") // short: unix socket paths are limited to 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })

	sock = filepath.Join(dir, "vm1.sock")
	lf, err := peer.Listen(sock)
	require.NoError(t, err)
	defer lf.Close()
	ns, err := peer.ListenNotify(filepath.Join(dir, "notify"))
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })

	cmd = peer.Activated(lf, bin, args...)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.Path)
	stderr = &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, sock, ns.C, stderr
}

func nextState(t *testing.T, ch <-chan peer.Datagram) string {
	t.Helper()
	select {
	case d := <-ch:
		return d.State
	case <-time.After(15 * time.Second):
		t.Fatal("no sd_notify datagram within 15s")
		return ""
	}
}

// virtiofsdFor lists virtiofsd processes serving dir.
func virtiofsdFor(dir string) []string {
	out, _ := exec.Command("pgrep", "-f", "virtiofsd.*source="+dir).Output()
	return strings.Fields(string(out))
}

func TestRealVirtiofsdServesTheSystemdSocketAndEndsCleanly(t *testing.T) {
	share := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(share, "hello"), []byte("hi\n"), 0o644))
	cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+launch.CVirtiofsd)

	assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Starting virtiofsd"))
	ready := nextState(t, notify)
	require.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=Waiting for a vhost-user client on "+sock+", sharing "+share),
		"READY=1 arrives before any client connects: %q\nshim stderr:\n%s", ready, stderr)

	c, err := peer.Probe(sock, 10*time.Second)
	require.NoError(t, err, "a GET_FEATURES reply from the real virtiofsd")
	assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Serving a vhost-user client on "+sock))
	c.Close() // the VM hangs up

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "the shim exits 0 when the VM disconnects\n%s", stderr)
	case <-time.After(15 * time.Second):
		t.Fatalf("the shim did not exit after the client hung up\n%s", stderr)
	}
	assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
	out := stderr.String()
	assert.Contains(t, out, "virtio_session_mount: Waiting for vhost-user socket connection...")
	assert.Contains(t, out, "virtio_session_mount: Received vhost-user socket connection")
}

func TestRealVirtiofsdStopsOnSIGTERM(t *testing.T) {
	share := t.TempDir()
	cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+launch.CVirtiofsd)
	nextState(t, notify)
	require.True(t, strings.HasPrefix(nextState(t, notify), "READY=1"), stderr.String())
	c, err := peer.Probe(sock, 10*time.Second)
	require.NoError(t, err)
	defer c.Close()
	nextState(t, notify)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM)) // systemctl stop
	assert.True(t, strings.HasPrefix(nextState(t, notify), "STOPPING=1"))
	require.NoError(t, cmd.Wait(), "a stop within the grace period is clean\n%s", stderr)
	assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
}

func TestRealVirtiofsdFailureIsPassedOn(t *testing.T) {
	share := t.TempDir()
	cmd, _, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+launch.CVirtiofsd, "--", "-o", "no_such_option")
	nextState(t, notify)
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 1, ee.ExitCode(), "virtiofsd's own exit status")
	assert.Contains(t, stderr.String(), "before it was ready")
	select {
	case d := <-notify:
		assert.NotContains(t, d.State, "READY=1")
	default:
	}
}
