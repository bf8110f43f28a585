package proctree

import (
	"os"
	"os/exec"
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
