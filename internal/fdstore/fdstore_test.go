package fdstore

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/scm"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/memfd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// fakeSystemd pretends to be systemd's notification socket at addr and
// returns a function that reads one datagram with the descriptors it carries.
func fakeSystemd(t *testing.T, addr string) func() (string, []*os.File) {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return func() (string, []*os.File) {
		t.Helper()
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(maxFiles*4))
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		require.NoError(t, err)
		require.Zero(t, flags&unix.MSG_CTRUNC)
		files, err := scm.Files(oob[:oobn], "received")
		for _, f := range files {
			t.Cleanup(func() { f.Close() })
		}
		require.NoError(t, err)
		return string(buf[:n]), files
	}
}

func TestStoreSendsTheNameAndTheDescriptorsToSystemd(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "notify")
	read := fakeSystemd(t, path)
	state := memfd.New(t, "memfd", "saved state")
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { pr.Close(); pw.Close() })

	sent, err := Notifier{Socket: path}.Store("session-state", state, pw)
	require.NoError(t, err)
	assert.True(t, sent)

	msg, files := read()
	assert.Equal(t, "FDSTORE=1\nFDNAME=session-state", msg)
	require.Len(t, files, 2)
	buf := make([]byte, 11)
	_, err = files[0].ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, "saved state", string(buf), "systemd got the memfd itself")
	_, err = files[1].WriteString("x")
	require.NoError(t, err)
	_, err = pr.Read(buf[:1])
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:1]), "systemd got the pipe's write end")

	_, err = state.WriteString(", still ours")
	assert.NoError(t, err, "Store leaves the caller's descriptors open")
}

func TestStoreReachesAnAbstractNotifySocket(t *testing.T) {
	addr := fmt.Sprintf("@virtiofsd-shim-fdstore-test-%d", os.Getpid())
	read := fakeSystemd(t, addr)
	sent, err := FromEnv(func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return addr
		}
		return ""
	}).Store("mem", memfd.New(t, "memfd", "m"))
	require.NoError(t, err)
	assert.True(t, sent)
	msg, files := read()
	assert.Equal(t, "FDSTORE=1\nFDNAME=mem", msg)
	assert.Len(t, files, 1)
}

func TestRemoveAsksSystemdToDropTheName(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "notify")
	read := fakeSystemd(t, path)
	sent, err := Notifier{Socket: path}.Remove("session-state")
	require.NoError(t, err)
	assert.True(t, sent)
	msg, files := read()
	assert.Equal(t, "FDSTOREREMOVE=1\nFDNAME=session-state", msg)
	assert.Empty(t, files)
}

func TestOffSystemdStoreAndRemoveDoNothing(t *testing.T) {
	n := FromEnv(func(string) string { return "" })
	sent, err := n.Store("mem", memfd.New(t, "memfd", "m"))
	assert.False(t, sent)
	assert.NoError(t, err)
	sent, err = n.Remove("mem")
	assert.False(t, sent)
	assert.NoError(t, err)
}

func TestStoreFailsWhenSystemdIsNotListening(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "gone")
	sent, err := Notifier{Socket: path}.Store("mem", memfd.New(t, "memfd", "m"))
	assert.False(t, sent)
	assert.ErrorContains(t, err, "send FDSTORE=1 to systemd")
	sent, err = Notifier{Socket: path}.Remove("mem")
	assert.False(t, sent)
	assert.ErrorContains(t, err, "send FDSTOREREMOVE=1 to systemd")
}

func TestStoreRefusesWhatSystemdCouldNotKeep(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "notify")
	fakeSystemd(t, path)
	n := Notifier{Socket: path}
	closed := memfd.New(t, "memfd", "")
	closed.Close()
	many := make([]*os.File, maxFiles+1)
	one := memfd.New(t, "memfd", "")
	for i := range many {
		many[i] = one
	}
	for _, tc := range []struct {
		name  string
		files []*os.File
		want  string
	}{
		{"no descriptor", nil, `store "mem": 0 descriptors, want 1 to 253`},
		{"more than one message can carry", many, `store "mem": 254 descriptors, want 1 to 253`},
		{"a nil file", []*os.File{nil}, "store: nil file"},
		{"a closed file", []*os.File{closed}, "store: descriptor of memfd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := n.Store("mem", tc.files...)
			assert.False(t, sent)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestNamesFollowSystemdsRules(t *testing.T) {
	for _, ok := range []string{"mem", "ring0-kick", "a b", "~!@#$%^&*()", strings.Repeat("x", MaxNameLen), "vhost-user2"} {
		assert.NoError(t, ValidName(ok), ok)
	}
	for _, tc := range []struct{ name, want string }{
		{"", "fd store name is empty"},
		{strings.Repeat("x", MaxNameLen+1), "is 256 bytes, systemd allows at most 255"},
		{"a:b", `has ':' at byte 1`},
		{"a\nFDSTOREREMOVE=1", `has '\n' at byte 1`},
		{"\x1f", `has '\x1f' at byte 0`},
		{"del\x7f", `has '\x7f' at byte 3`},
		{"é", `has 'Ã' at byte 0`},
		{SocketName, "is the socket's own"},
	} {
		err := ValidName(tc.name)
		require.Error(t, err, "%q", tc.name)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "use a short name of printable ASCII")
		sent, serr := Notifier{Socket: "/nonexistent"}.Store(tc.name, os.Stdin)
		assert.False(t, sent)
		assert.Equal(t, err, serr, "Store checks the name before anything else")
		sent, serr = Notifier{}.Remove(tc.name)
		assert.False(t, sent)
		assert.Equal(t, err, serr, "Remove checks the name even off systemd")
	}
}

func TestByNameGroupsTheStoredDescriptorsAndLeavesTheSocketOut(t *testing.T) {
	f := func(name string) *os.File {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		f := os.NewFile(uintptr(fd), name)
		t.Cleanup(func() { f.Close() })
		return f
	}
	sock, a1, b, a2 := f(SocketName), f("a"), f("b"), f("a")
	got := ByName([]*os.File{sock, a1, b, nil, a2})
	assert.Equal(t, map[string][]*os.File{"a": {a1, a2}, "b": {b}}, got)
	assert.Empty(t, ByName(nil))
}

func TestStoreSendsAsManyDescriptorsAsOneMessageCarries(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "notify")
	read := fakeSystemd(t, path)
	one := memfd.New(t, "memfd", "")
	files := make([]*os.File, maxFiles)
	for i := range files {
		files[i] = one
	}
	sent, err := Notifier{Socket: path}.Store("many", files...)
	require.NoError(t, err)
	assert.True(t, sent)
	msg, got := read()
	assert.Equal(t, "FDSTORE=1\nFDNAME=many", msg)
	assert.Len(t, got, maxFiles)
}
