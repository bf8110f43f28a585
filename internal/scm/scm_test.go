package scm

import (
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestFilesCrossASocketAndKeepTheirMode(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	a, z := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "z")
	ca, err := net.FileConn(a)
	require.NoError(t, err)
	cz, err := net.FileConn(z)
	require.NoError(t, err)
	a.Close()
	z.Close()
	defer ca.Close()
	defer cz.Close()

	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	defer pw.Close()
	oob, err := Rights([]*os.File{pw, pr})
	require.NoError(t, err)
	_, _, err = ca.(*net.UnixConn).WriteMsgUnix([]byte("x"), oob, nil)
	require.NoError(t, err)
	assert.True(t, nonblocking(t, pw), "Rights left the pipe in non-blocking mode, as os.Pipe made it")

	buf, rcv := make([]byte, 1), make([]byte, unix.CmsgSpace(2*4))
	_, oobn, _, _, err := cz.(*net.UnixConn).ReadMsgUnix(buf, rcv)
	require.NoError(t, err)
	files, err := Files(rcv[:oobn], "passed")
	require.NoError(t, err)
	require.Len(t, files, 2)
	defer files[0].Close()
	defer files[1].Close()
	assert.Equal(t, "passed", files[0].Name())
	_, err = files[0].WriteString("y")
	require.NoError(t, err)
	got := make([]byte, 1)
	_, err = pr.Read(got)
	require.NoError(t, err)
	assert.Equal(t, "y", string(got), "the first descriptor is the pipe's write end")
}

func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	var flags int
	require.NoError(t, rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	require.NoError(t, err)
	return flags&unix.O_NONBLOCK != 0
}

func TestRightsOfNothingIsNoControlData(t *testing.T) {
	oob, err := Rights(nil)
	assert.NoError(t, err)
	assert.Nil(t, oob)
}

func TestRightsRefusesFilesWithoutADescriptor(t *testing.T) {
	_, err := Rights([]*os.File{nil})
	assert.EqualError(t, err, "nil file")
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	pw.Close()
	defer pr.Close()
	_, err = Rights([]*os.File{pr, pw})
	assert.ErrorContains(t, err, "descriptor of |1")
}

func TestFilesRefusesBrokenControlData(t *testing.T) {
	bad := unix.UnixRights(0)
	bad[0] = 0xff // a length beyond the data
	_, err := Files(bad, "x")
	assert.ErrorContains(t, err, "parse control data")
	files, err := Files(nil, "x")
	assert.NoError(t, err)
	assert.Empty(t, files)
}

func TestFilesSkipsOtherControlMessages(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	oob := append(unix.UnixCredentials(&unix.Ucred{Pid: 1}), unix.UnixRights(fd)...)
	files, err := Files(oob, "ev")
	require.NoError(t, err)
	require.Len(t, files, 1)
	assert.Equal(t, uintptr(fd), files[0].Fd())
	files[0].Close()
}
