package proctree

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDescendantsFindsAChildAndItsChild(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	require.NoError(t, cmd.Start())
	defer func() {
		for _, pid := range Tree(cmd.Process.Pid)[1:] {
			_ = syscall.Kill(pid, syscall.SIGKILL) // the sleep, which outlives sh
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
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
	tree := Tree(cmd.Process.Pid)
	assert.Len(t, tree, 2, "sh and its sleep")
	assert.Equal(t, cmd.Process.Pid, tree[0], "the process first")
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

// statWithThreads writes a /proc/PID/stat of n threads under root.
func statWithThreads(t *testing.T, root string, pid, n int) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	line := fmt.Sprintf("%d (virtiofsd) S 1 7 7 0 -1 4194560 1133 0 0 0 2 3 0 0 20 0 %d 0 1720363 1224433664 1434\n", pid, n)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644))
}

// A reload's wait for virtiofsd's preparation (service's announce):
// virtiofsd (pid 10) and its sandboxed child (11), whose preparation
// thread ends, and the wait with it.
func TestWaitThreadsEndsWhenTheTreeIsBackToItsThreads(t *testing.T) {
	root := t.TempDir()
	tab := Table{Root: root}
	statWithThreads(t, root, 10, 1)
	statWithThreads(t, root, 11, 4)
	pids := []int{10, 11}
	baseline := tab.TreeThreads(pids)
	assert.Equal(t, 5, baseline)
	statWithThreads(t, root, 11, 5) // a thread started

	done := make(chan bool, 1)
	go func() { done <- tab.WaitThreads(context.Background(), pids, baseline, time.Millisecond) }()
	select {
	case <-done:
		t.Fatal("the wait ended while the thread ran")
	case <-time.After(20 * time.Millisecond):
	}
	statWithThreads(t, root, 11, 4)
	select {
	case ok := <-done:
		assert.True(t, ok)
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end with the thread")
	}
}

func TestWaitThreadsGivesUpAtItsDeadlineOrWhenTheProcessIsGone(t *testing.T) {
	root := t.TempDir()
	tab := Table{Root: root}
	statWithThreads(t, root, 10, 1)
	statWithThreads(t, root, 11, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.False(t, tab.WaitThreads(ctx, []int{10, 11}, 4, time.Millisecond), "the deadline")
	assert.False(t, tab.WaitThreads(context.Background(), []int{12, 11}, 4, time.Millisecond), "the first process is gone")
}
