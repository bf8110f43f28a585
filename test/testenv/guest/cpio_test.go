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

// TestRunInitramfsCarriesSpecFiles checks that a run's archive holds the
// script and the spec's extra files, executable, with their folders.
func TestRunInitramfsCarriesSpecFiles(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio(1) not installed (apt-get install cpio): cannot read the archive back")
	}
	tmp := t.TempDir()
	base := filepath.Join(tmp, "base.cpio")
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("bin", 0o755)
	require.NoError(t, w.Close())
	require.NoError(t, os.WriteFile(base, buf.Bytes(), 0o644))

	out := filepath.Join(tmp, "run.cpio")
	spec := Spec{Script: "guestload -dir /mnt/x\n", Shares: []Share{{Tag: "x"}},
		Files: map[string][]byte{"bin/guestload": []byte("program"), "usr/local/lib/data": []byte("data")}}
	require.NoError(t, WriteInitramfs(out, &Image{Initramfs: base}, spec))

	dir := t.TempDir()
	archive, err := os.Open(out)
	require.NoError(t, err)
	defer archive.Close()
	// GNU cpio reads the first of concatenated archives only: skip the base.
	_, err = archive.Seek(int64(len(buf.Bytes())), 0)
	require.NoError(t, err)
	cmd := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = archive
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "cpio -id: %s", b)
	for name, want := range map[string]string{"bin/guestload": "program", "usr/local/lib/data": "data", "script": spec.Script} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, name)
		assert.Equal(t, want, string(got), name)
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), name)
	}
	assert.DirExists(t, filepath.Join(dir, "mnt", "x"))
}

// An archive file holds its prefix, then the archive; a failing fill is
// the error, and no archive is finished.
func TestArchiveFileFollowsItsPrefixAndReportsAFailedFill(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.cpio")
	require.NoError(t, writeArchive(path, bytes.NewReader([]byte("BASE")), func(w *cpioWriter) error {
		w.File("script", 0o755, []byte("echo hi\n"))
		return nil
	}))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(b, []byte("BASE070701")), "the prefix, then a newc header")
	assert.Contains(t, string(b), "TRAILER!!!")

	boom := os.ErrPermission
	err = writeArchive(path, nil, func(*cpioWriter) error { return boom })
	assert.ErrorIs(t, err, boom)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "TRAILER!!!")
}
