// Package memfd makes the anonymous memory files tests pass as descriptors
// (guest memory, saved state): what QEMU and systemd's store hold.
package memfd

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// New makes a memfd named name holding content, closed when the test ends
// (a second close, after the code under test closed it, does nothing).
func New(t testing.TB, name, content string) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString(content)
	require.NoError(t, err)
	return f
}
