package front

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// netpollerFDs are the descriptors in this process's epoll sets (Go's
// netpoller is the one epoll instance of a test binary), from
// /proc/self/fdinfo.
func netpollerFDs(t *testing.T) map[int]bool {
	t.Helper()
	got := map[int]bool{}
	links, err := filepath.Glob("/proc/self/fd/*")
	require.NoError(t, err)
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", filepath.Base(l)))
		require.NoError(t, err)
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" {
				n, err := strconv.Atoi(f[1])
				require.NoError(t, err)
				got[n] = true
			}
		}
	}
	return got
}

// TestARingsEventfdIsHeldOutsideGosNetpoller: QEMU's kick and call eventfds
// are non-blocking; held as an *os.File they sit in Go's netpoller and
// every kick and call wakes the shim. The front holds them bare, and sends
// them as a short-lived *os.File.
func TestARingsEventfdIsHeldOutsideGosNetpoller(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	require.NoError(t, err)
	fromQEMU := os.NewFile(uintptr(efd), "kick") // as scm receives it
	require.True(t, netpollerFDs(t)[efd], "the check sees an *os.File of a non-blocking eventfd in the netpoller")

	h, err := hold(fromQEMU, "ring 0's kick")
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	require.NoError(t, fromQEMU.Close())
	assert.False(t, netpollerFDs(t)[h.fd], "the held dup is not in the netpoller")

	f, err := h.file()
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.False(t, netpollerFDs(t)[h.fd], "sending it leaves the held dup out of the netpoller")

	require.NoError(t, kick(h))
	var v [8]byte
	n, err := unix.Read(h.fd, v[:])
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	assert.Equal(t, byte(1), v[0], "kick writes to the held eventfd")

	require.NoError(t, h.Close())
	assert.NoError(t, h.Close(), "a second close does nothing")
	assert.ErrorIs(t, kick(h), os.ErrClosed)
}
