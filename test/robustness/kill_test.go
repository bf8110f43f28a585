package robustness

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// requireVirtiofsd skips when the real C virtiofsd is not installed.
func requireVirtiofsd(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(virtiofsd.CVirtiofsd); err != nil {
		t.Skipf("the C virtiofsd is not installed (apt-get install qemu-system-common): %v", err)
	}
}

// TestShimKilledLeavesNoVirtiofsd kills the shim with SIGKILL while the real
// C virtiofsd serves a client: both of virtiofsd's processes must be gone
// within a second (Pdeathsig on the shim's forking thread, and virtiofsd's
// own for its sandboxed child).
func TestShimKilledLeavesNoVirtiofsd(t *testing.T) {
	sdbox.RequireRoot(t)
	requireVirtiofsd(t)
	bin, err := shimbox.Binary()
	require.NoError(t, err)

	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	require.NoError(t, os.Mkdir(share, 0o755))
	sockPath := filepath.Join(dir, "s.sock")
	lf, err := vhostuser.Listen(sockPath)
	require.NoError(t, err)
	defer lf.Close()

	// The socket as systemd passes it: fd 3, LISTEN_FDS=1 and LISTEN_PID of
	// the shim itself.
	cmd := vhostuser.Activated(lf, bin, "run",
		"--shared-dir="+share, "--virtiofsd="+virtiofsd.CVirtiofsd, "--flavor=c", "--log-target=stderr")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	reaped := false
	defer func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	waitReady := time.After(15 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "shim ended before virtiofsd was ready: %s", strings.Join(seen, "\n"))
			seen = append(seen, l)
			ready = strings.Contains(l, "virtiofsd is ready")
		case <-waitReady:
			t.Fatalf("virtiofsd not ready within 15s: %s", strings.Join(seen, "\n"))
		}
	}
	conn, err := vhostuser.Probe(sockPath, 10*time.Second)
	require.NoError(t, err, "the served client")
	defer conn.Close()

	below := proctree.Descendants(proctree.All(), cmd.Process.Pid)
	require.NotEmpty(t, below, "no virtiofsd below the shim")
	var names []string
	for _, p := range below {
		names = append(names, p.Comm)
	}
	t.Logf("below the shim (pid %d): %v", cmd.Process.Pid, names)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	_ = cmd.Wait()
	reaped = true
	alive := func() []int {
		var left []int
		for _, p := range below {
			if proctree.Alive(p.PID) {
				left = append(left, p.PID)
			}
		}
		return left
	}
	// Pdeathsig kills them at once; the bound is generous, for a loaded machine.
	if !assert.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Empty(c, alive(), "still alive")
	}, 30*time.Second, 10*time.Millisecond, "the processes below the shim (%v) end after the shim's SIGKILL", names) {
		for _, pid := range alive() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.FailNow()
	}
	t.Logf("all %d processes gone %v after the SIGKILL", len(below), time.Since(killed).Round(time.Millisecond))
}
