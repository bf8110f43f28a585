package launch

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// stderrPipe is virtiofsd's stderr, read with blocking read(2) and kept out
// of Go's netpoller. A pipe registered with epoll has the kernel wake the
// poller at every write(2) into it (pipe->poll_usage, Linux 5.16), even
// while the shim pauses its reading during a flood (pacedReader), and each
// wake-up costs the writer, virtiofsd, a context switch on a small machine.
// A blocking read sleeps only while the pipe is empty: a write into a pipe
// nobody waits on costs virtiofsd the copy and nothing more. The price is
// one OS thread parked in read(2) while virtiofsd is quiet.
type stderrPipe struct {
	fd      int      // read end, blocking, close-on-exec
	w       *os.File // write end, virtiofsd's stdout and stderr
	stopped atomic.Bool
}

// newStderrPipe makes the pipe and asks for size bytes of capacity (best
// effort, F_SETPIPE_SZ: a smaller pipe only makes a burst of lines block
// its writer sooner).
func newStderrPipe(size int) (*stderrPipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, size)
	return &stderrPipe{fd: p[0], w: os.NewFile(uintptr(p[1]), "virtiofsd-stderr")}, nil
}

// Read blocks until the pipe holds something, then takes up to len(b)
// bytes. It returns io.EOF once every writer has closed the pipe, and
// os.ErrClosed after Stop.
func (p *stderrPipe) Read(b []byte) (int, error) {
	for !p.stopped.Load() {
		n, err := unix.Read(p.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, fmt.Errorf("read virtiofsd's stderr: %w", err)
		case n == 0:
			return 0, io.EOF
		case p.stopped.Load():
			return 0, os.ErrClosed // what Stop wrote, or lines no longer wanted
		}
		return n, nil
	}
	return 0, os.ErrClosed
}

// Stop ends reading a pipe that a process virtiofsd left behind still
// holds open, so that EOF may never come: the next Read, or the one
// blocked now, returns os.ErrClosed. A read blocked in the kernel is woken
// by one newline written through a write end opened for the purpose.
func (p *stderrPipe) Stop() {
	p.stopped.Store(true)
	w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", p.fd), os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return // no /proc: the reader ends when the last writer does
	}
	_, _ = w.Write([]byte{'\n'})
	w.Close()
}

// Close closes both ends; call it once the reader has returned.
func (p *stderrPipe) Close() {
	p.w.Close()
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}
