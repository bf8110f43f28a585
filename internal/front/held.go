package front

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// held is a descriptor the front keeps for the session: a dup of a ring's
// kick, call or err eventfd. It is a bare descriptor, never an *os.File:
// QEMU's eventfds are non-blocking, os.NewFile registers such a descriptor
// with Go's netpoller (edge-triggered epoll), and every kick from the guest
// and every call from virtiofsd would then wake the shim although nothing
// waits on it (test/bench's BenchmarkEventfdHeldAsFile: 26.6 µs of CPU per
// write held as an *os.File, 0.6 µs held bare). file makes a short-lived
// *os.File of it for one send.
type held struct {
	fd   int
	name string
}

// hold keeps a dup of c's descriptor.
func hold(c syscall.Conn, name string) (*held, error) {
	fd, err := dupFD(c, name)
	if err != nil {
		return nil, err
	}
	return &held{fd: fd, name: name}, nil
}

// Name is what the descriptor is, for errors.
func (h *held) Name() string { return h.name }

// Close releases the descriptor.
func (h *held) Close() error {
	if h == nil || h.fd < 0 {
		return nil
	}
	fd := h.fd
	h.fd = -1
	return unix.Close(fd)
}

// SyscallConn gives the descriptor to dupOf, sameFile and kick.
func (h *held) SyscallConn() (syscall.RawConn, error) { return heldConn{h}, nil }

// file is a dup of the descriptor as an *os.File, for one send: the caller
// closes it.
func (h *held) file() (*os.File, error) { return dupOf(h, h.name) }

type heldConn struct{ h *held }

func (c heldConn) Control(f func(fd uintptr)) error {
	if c.h.fd < 0 {
		return os.ErrClosed
	}
	f(uintptr(c.h.fd))
	return nil
}

func (heldConn) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (heldConn) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }
