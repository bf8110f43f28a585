package vhostuser

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// socketPair returns two connected vhost-user stream ends, closed at cleanup.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// eventfd returns a fresh eventfd, closed at cleanup.
func eventfd(t testing.TB) *os.File {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "eventfd")
	t.Cleanup(func() { f.Close() })
	return f
}

// sendRaw writes b on c with n copies of f's descriptor as SCM_RIGHTS.
func sendRaw(t testing.TB, c *net.UnixConn, b []byte, f *os.File, n int) {
	t.Helper()
	var oob []byte
	if n > 0 {
		fds := make([]int, n)
		for i := range fds {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
}

// raw builds the wire bytes of a message whose header says size.
func raw(req Request, flags, size uint32, payload []byte) []byte {
	return append(Header{Request: req, Flags: flags, Size: size}.append(nil), payload...)
}

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fed returns a Conn that reads b, sent with n copies of an eventfd by a
// peer that then hung up, and how many descriptors the process held just
// before the send.
func fed(t testing.TB, b []byte, n int) (*Conn, int) {
	t.Helper()
	a, z := socketPair(t)
	ev := eventfd(t)
	c := NewConn(z)
	before := openFDs(t)
	if len(b) > 0 {
		sendRaw(t, a, b, ev, n)
	}
	a.CloseWrite()
	return c, before
}

// chunk is what one recvmsg returns to a scripted connection.
type chunk struct {
	data  []byte
	oob   []byte
	flags int
	err   error
}

// scripted is a connection whose reads return its chunks in turn (each
// must fit the reader's buffer), then a hang-up, and whose first
// WriteMsgUnix writes at most first bytes.
type scripted struct {
	reads   []chunk
	first   int
	werr    error
	written []byte
	oob     []byte
}

func (s *scripted) ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error) {
	if len(s.reads) == 0 {
		return 0, 0, 0, nil, nil
	}
	c := s.reads[0]
	s.reads = s.reads[1:]
	if len(c.data) > len(b) || len(c.oob) > len(oob) {
		panic("scripted chunk does not fit the read")
	}
	return copy(b, c.data), copy(oob, c.oob), c.flags, nil, c.err
}

func (s *scripted) WriteMsgUnix(b, oob []byte, _ *net.UnixAddr) (int, int, error) {
	n := min(len(b), s.first)
	s.written = append(s.written, b[:n]...)
	s.oob = oob
	return n, len(oob), nil
}

func (s *scripted) Write(b []byte) (int, error) {
	if s.werr != nil {
		return 0, s.werr
	}
	s.written = append(s.written, b...)
	return len(b), nil
}

func (s *scripted) Close() error { return nil }

// dupRights is control data carrying n new descriptors (dups of f's),
// which the reader then owns.
func dupRights(t testing.TB, f *os.File, n int) []byte {
	t.Helper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	return unix.UnixRights(fds...)
}
