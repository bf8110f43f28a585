// Package testdir names the folders tests work in: the source tree, and a
// temporary folder short enough for unix sockets.
package testdir

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the source tree this package was built from (the folder of
// go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "../../.."))
}

// Short makes a temporary folder under $TMPDIR (not t.TempDir, whose path
// holds the test's name), short enough for the unix sockets a test creates
// in it: their paths are limited to 108 bytes. It is removed when the test
// ends.
func Short(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vt")
	if err != nil {
		t.Fatalf("make a temporary folder for sockets (is $TMPDIR writable?): %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
