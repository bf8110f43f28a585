package activation

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// fakeEnv is systemd's side of the protocol: variables and descriptors.
func fakeEnv(vars map[string]string, files ...*os.File) Environment {
	return Environment{
		Getenv: func(k string) string { return vars[k] },
		Getpid: func() int { return 4242 },
		Files:  func(bool) []*os.File { return files },
	}
}

// socketFile makes a real socket of the given kind; listen says whether to
// call listen(2) on it.
func socketFile(t *testing.T, domain, typ int, listen bool) *os.File {
	t.Helper()
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	switch domain {
	case unix.AF_UNIX:
		require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(testdir.Short(t), "s.sock")}))
	case unix.AF_INET:
		require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	}
	if listen {
		require.NoError(t, unix.Listen(fd, 1))
	}
	f := os.NewFile(uintptr(fd), "LISTEN_FD_3")
	t.Cleanup(func() { f.Close() })
	return f
}

func TestListenTakesTheOneUnixListeningSocket(t *testing.T) {
	f := socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, true)
	s, err := Listen(fakeEnv(map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "vhost-user"}, f))
	require.NoError(t, err)
	assert.Same(t, f, s.File)
	assert.Equal(t, "s.sock", filepath.Base(s.Path))
	assert.Equal(t, s.Path, s.String())
}

func TestListenRefusesWhatSystemdDidNotPassRight(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"none passed", map[string]string{}, "no socket was passed (LISTEN_FDS is not set): run it from a .socket unit"},
		{"zero passed", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, "no socket was passed (LISTEN_FDS=0)"},
		{"more than one", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"},
			`2 sockets were passed (LISTEN_FDNAMES="a:b"), want exactly one, or one named vhost-user beside the fd store's`},
		{"two named vhost-user", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "vhost-user:state:vhost-user"},
			`3 sockets were passed (LISTEN_FDNAMES="vhost-user:state:vhost-user")`},
		{"a store without the socket", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "state:vhost-user-2"},
			"FileDescriptorName=vhost-user"},
		{"another process", map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": "1"},
			`LISTEN_PID="1" is not this process (pid 4242)`},
		{"garbage count", map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "x"}, `LISTEN_FDS="x" is not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Listen(fakeEnv(tc.vars))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrActivation))
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// named gives f's descriptor to a new File named as LISTEN_FDNAMES names it.
func named(t *testing.T, f *os.File, name string) *os.File {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	g := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { g.Close() })
	return g
}

func isOpen(f *os.File) bool {
	var st syscall.Stat_t
	return syscall.Fstat(int(f.Fd()), &st) == nil
}

func TestListenLeavesTheFDStoresDescriptorsBesideTheSocket(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	state := named(t, pr, "state")
	sock := named(t, socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, true), "vhost-user")
	conn := named(t, socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, false), "vm-connection")
	s, err := Listen(fakeEnv(map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "state:vhost-user:vm-connection"}, state, sock, conn))
	require.NoError(t, err)
	assert.Same(t, sock, s.File)
	assert.Equal(t, []*os.File{state, conn}, s.Stored)
	assert.True(t, isOpen(state) && isOpen(conn), "the store's descriptors are left open")
}

func TestListenClosesTheStoreWhenTheSocketIsUnusable(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	state := named(t, pr, "state")
	sock := named(t, socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, false), "vhost-user")
	stateFD, sockFD := int(state.Fd()), int(sock.Fd())
	_, err = Listen(fakeEnv(map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "vhost-user:state"}, sock, state))
	require.ErrorIs(t, err, ErrActivation)
	assert.Contains(t, err.Error(), "is not listening")
	var st syscall.Stat_t
	assert.Error(t, syscall.Fstat(stateFD, &st))
	assert.Error(t, syscall.Fstat(sockFD, &st))
}

func TestListenRefusesFewerDescriptorsThanAnnounced(t *testing.T) {
	sock := named(t, socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, true), "vhost-user")
	fd := int(sock.Fd())
	_, err := Listen(fakeEnv(map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "vhost-user:state"}, sock))
	require.ErrorIs(t, err, ErrActivation)
	assert.Contains(t, err.Error(), "no socket was passed")
	var st syscall.Stat_t
	assert.Error(t, syscall.Fstat(fd, &st), "what did arrive is closed")
}

func TestCheckRefusesDescriptorsVirtiofsdCannotServe(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	for _, tc := range []struct {
		name string
		file *os.File
		want string
	}{
		{"a pipe", pr, "is not a socket but a pipe"},
		{"a UDP socket", socketFile(t, unix.AF_INET, unix.SOCK_DGRAM, false), "is an AF_INET SOCK_DGRAM socket, vhost-user needs an AF_UNIX SOCK_STREAM one"},
		{"a TCP listener", socketFile(t, unix.AF_INET, unix.SOCK_STREAM, true), "is an AF_INET SOCK_STREAM socket"},
		{"a unix datagram socket", socketFile(t, unix.AF_UNIX, unix.SOCK_DGRAM, false), "AF_UNIX SOCK_DGRAM socket"},
		{"bound but not listening", socketFile(t, unix.AF_UNIX, unix.SOCK_STREAM, false), "is not listening"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := int(tc.file.Fd())
			_, err := Check(tc.file)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrActivation))
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "descriptor "+strconv.Itoa(fd))
			var st syscall.Stat_t
			assert.Error(t, syscall.Fstat(fd, &st), "a refused descriptor is closed")
		})
	}
}

func TestCheckAcceptsAGoListener(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(testdir.Short(t), "vm.sock"))
	require.NoError(t, err)
	defer ln.Close()
	f, err := ln.(*net.UnixListener).File()
	require.NoError(t, err)
	s, err := Check(f)
	require.NoError(t, err)
	defer s.File.Close()
	assert.Equal(t, "vm.sock", filepath.Base(s.Path))
}
