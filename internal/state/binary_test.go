package state

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A session runs an older binary once the file it was started from is
// replaced (a package upgrade renames a new file over it), changed in
// place, or removed; the same file, or one that cannot be judged, is not
// older.
func TestABinaryIsOlderOnceItsFileIsReplacedChangedOrRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "virtiofsd")
	write := func(p, content string) {
		require.NoError(t, os.WriteFile(p, []byte(content), 0o755))
	}
	write(path, "v1")
	started, err := Identify(path, "1.13.2")
	require.NoError(t, err)
	assert.Equal(t, "1.13.2", started.Version)
	replaced, why := started.Replaced()
	assert.False(t, replaced, "the same file")
	assert.Empty(t, why)

	// dpkg: a new file, renamed over the old one.
	write(path+".dpkg-new", "v2")
	require.NoError(t, os.Rename(path+".dpkg-new", path))
	replaced, why = started.Replaced()
	assert.True(t, replaced)
	assert.Equal(t, path+" was replaced since it was started (another file is installed there)", why)

	// cp over it: the same inode, another size or time.
	again, err := Identify(path, "")
	require.NoError(t, err)
	write(path, "version 3")
	replaced, why = again.Replaced()
	assert.True(t, replaced)
	assert.Contains(t, why, "was changed since it was started")

	// A symbolic link pointed elsewhere (VIRTIOFSD= a link).
	link := filepath.Join(dir, "link")
	other := filepath.Join(dir, "other")
	write(other, "other")
	require.NoError(t, os.Symlink(path, link))
	viaLink, err := Identify(link, "")
	require.NoError(t, err)
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink(other, link))
	replaced, _ = viaLink.Replaced()
	assert.True(t, replaced, "the link leads to another file")

	require.NoError(t, os.Remove(path))
	replaced, why = again.Replaced()
	assert.True(t, replaced)
	assert.Equal(t, path+" was removed since it was started", why)

	var unknown *Binary
	replaced, _ = unknown.Replaced()
	assert.False(t, replaced, "nothing recorded, nothing claimed")
}

func TestTheRunningProgramIdentifiesItself(t *testing.T) {
	self, err := Self("dev")
	require.NoError(t, err)
	exe, err := os.Executable()
	require.NoError(t, err)
	assert.Equal(t, exe, self.Path)
	assert.NotZero(t, self.Inode)
	assert.WithinDuration(t, time.Now(), self.ModTime, 24*time.Hour, "the test binary was just built")
	replaced, _ := self.Replaced()
	assert.False(t, replaced)
}

// TestAListOfAnotherMountNamespaceLooksAtItsFiles: a session's recorded
// path is where its own root has the file; a list that reads a private
// systemd's sessions (a test's box, seen under /proc/PID/root) looks there,
// not at the same path on its own root.
func TestAListOfAnotherMountNamespaceLooksAtItsFiles(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/libexec"), 0o755))
	inRoot := filepath.Join(root, "usr/libexec/virtiofsd-shim-test")
	require.NoError(t, os.WriteFile(inRoot, []byte("v1"), 0o755))
	b, err := Identify(inRoot, "")
	require.NoError(t, err)
	b.Path = "/usr/libexec/virtiofsd-shim-test" // as the session recorded it

	replaced, why := b.ReplacedIn(root)
	assert.False(t, replaced, why)
	replaced, _ = b.Replaced()
	assert.True(t, replaced, "on this process's own root the file is not there")

	require.NoError(t, os.Remove(inRoot))
	replaced, why = b.ReplacedIn(root)
	assert.True(t, replaced)
	assert.Equal(t, "/usr/libexec/virtiofsd-shim-test was removed since it was started", why, "the reason names the session's path")
	st := &State{Shim: b}
	if assert.Len(t, st.ReplacedIn(root), 1) {
		assert.Equal(t, "shim", st.ReplacedIn(root)[0].Program)
	}
}
