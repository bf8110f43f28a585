package migration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The guest's script parses as sh, mounts the instance's tag, and holds
// the deleted file only when asked.
func TestScriptIsShellThatHoldsItsFiles(t *testing.T) {
	for _, deleted := range []bool{false, true} {
		s := Script(deleted)
		out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput()
		require.NoError(t, err, "sh -n: %s\n%s", out, s)
		assert.Contains(t, s, "mount -t virtiofs "+Instance+" /mnt/"+Instance)
		assert.Contains(t, s, "exec 3>>"+HeldFile+" 4<"+HeldFile)
		assert.Equal(t, deleted, strings.Contains(s, "rm "+GoneFile), "deleted=%v", deleted)
		assert.Equal(t, deleted, strings.Contains(s, "RESULT gone="), "deleted=%v", deleted)
	}
}
