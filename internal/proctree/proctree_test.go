package proctree

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDescendantsFindsAChildAndItsChild(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var below []Proc
	require.Eventually(t, func() bool {
		below = Descendants(All(), os.Getpid())
		for _, p := range below {
			if p.Comm == "sleep" && p.Cmdline == "sleep 30" {
				return true
			}
		}
		return false
	}, 5e9, 1e7)
	me, ok := Read(os.Getpid())
	require.True(t, ok)
	assert.True(t, Alive(me.PID))
	assert.Equal(t, cmd.Process.Pid, below[0].PID)
}

func TestReadParsesANameWithSpacesAndParentheses(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "7"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "7", "stat"), fmt.Appendf(nil, "7 (a (b) c) S 3 1 1 0 -1\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "8"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "8", "stat"), []byte("8 (gone) Z 7 1\n"), 0o644))
	tab := Table{Root: root}
	p, ok := tab.Read(7)
	require.True(t, ok)
	assert.Equal(t, Proc{PID: 7, PPID: 3, Comm: "a (b) c", State: "S"}, p)
	assert.Equal(t, []Proc{p}, tab.All(), "the zombie has ended")
	assert.False(t, tab.Alive(8))
	_, ok = tab.Read(9)
	assert.False(t, ok)
}

func TestThreadsReadsTheThreadCountOfAProcess(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "7"), 0o755))
	// A line of /proc/PID/stat as virtiofsd's reads, its name given a
	// space: num_threads is 5.
	line := "7 (virtio fs) S 1 7 7 0 -1 4194560 1133 0 0 0 2 3 0 0 20 0 5 0 1720363 1224433664 1434 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "7", "stat"), []byte(line), 0o644))
	n, ok := Table{Root: root}.Threads(7)
	require.True(t, ok)
	assert.Equal(t, 5, n)
	_, ok = Table{Root: root}.Threads(8)
	assert.False(t, ok, "a process that is gone")
}

func TestThreadsCountsThisProcesssThreads(t *testing.T) {
	n, ok := Threads(os.Getpid())
	require.True(t, ok)
	assert.GreaterOrEqual(t, n, 2, "a Go program runs several threads")
}
