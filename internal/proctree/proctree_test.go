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
