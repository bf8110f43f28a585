// Package scm moves *os.File descriptors through unix sockets as
// SCM_RIGHTS control data (unix(7)), for vhost-user and systemd's fd store.
package scm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Rights is the SCM_RIGHTS control data carrying files' descriptors, or
// nil for no file. Unlike os.File.Fd it leaves each descriptor's blocking
// mode alone (a socket stored or passed on keeps working in its poller).
// The caller keeps files open (runtime.KeepAlive) until the data is sent.
func Rights(files []*os.File) ([]byte, error) {
	if len(files) == 0 {
		return nil, nil
	}
	fds := make([]int, 0, len(files))
	for _, f := range files {
		if f == nil {
			return nil, errors.New("nil file")
		}
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("descriptor of %s: %w", f.Name(), err)
		}
		fd := -1
		if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
			return nil, fmt.Errorf("descriptor of %s: %w", f.Name(), err)
		}
		fds = append(fds, fd)
	}
	return unix.UnixRights(fds...), nil
}

// Files returns the descriptors of the SCM_RIGHTS messages in oob, each as
// a File called name; the caller owns them. Other control messages are
// skipped. On error, what was parsed is returned with it, to be closed.
func Files(oob []byte, name string) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control data: %w", err)
	}
	var files []*os.File
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return files, fmt.Errorf("parse control data: %w", err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), name))
		}
	}
	return files, nil
}
