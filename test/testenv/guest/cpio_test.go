package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCPIOArchiveUnpacksWithCpioTool checks the archive against GNU cpio, the
// reference reader of the newc format.
func TestCPIOArchiveUnpacksWithCpioTool(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio(1) not installed (apt-get install cpio): cannot cross-check the archive format")
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("bin", 0o755)
	w.File("bin/tool", 0o755, []byte("#!/bin/sh\necho hi\n"))
	w.File("odd", 0o644, []byte("12345"))
	w.Symlink("bin/sh", "tool")
	w.Dir("empty", 0o700)
	require.NoError(t, w.Close())

	dir := t.TempDir()
	cmd := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "cpio -id: %s", out)

	got, err := os.ReadFile(filepath.Join(dir, "bin/tool"))
	require.NoError(t, err)
	assert.Equal(t, "#!/bin/sh\necho hi\n", string(got))
	got, err = os.ReadFile(filepath.Join(dir, "odd"))
	require.NoError(t, err)
	assert.Equal(t, "12345", string(got))
	target, err := os.Readlink(filepath.Join(dir, "bin/sh"))
	require.NoError(t, err)
	assert.Equal(t, "tool", target)
	fi, err := os.Stat(filepath.Join(dir, "bin/tool"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	fi, err = os.Stat(filepath.Join(dir, "empty"))
	require.NoError(t, err)
	assert.True(t, fi.IsDir())
}
