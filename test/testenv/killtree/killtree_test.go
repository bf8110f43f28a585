package killtree

import (
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKillEndsAProcessAndTheChildItServesFrom(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 600 & wait")
	require.NoError(t, cmd.Start())
	var child []byte
	require.Eventually(t, func() bool {
		child, _ = exec.Command("pgrep", "-P", itoa(cmd.Process.Pid)).Output()
		return len(child) > 0
	}, 5*time.Second, 20*time.Millisecond)

	require.NoError(t, Kill(cmd.Process.Pid))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
	assert.Eventually(t, func() bool {
		out, _ := exec.Command("pgrep", "-P", itoa(cmd.Process.Pid)).Output()
		return len(out) == 0
	}, 5*time.Second, 20*time.Millisecond, "the child is gone too")
	assert.NoError(t, Kill(cmd.Process.Pid), "a process that has gone is no error")
}

func itoa(n int) string { return strconv.Itoa(n) }
