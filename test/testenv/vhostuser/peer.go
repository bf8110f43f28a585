// Package vhostuser plays the two outer peers of a virtiofsd-shim session in
// tests run without a service manager: systemd (the listening socket passed
// as fd 3, a NOTIFY_SOCKET that reads the states back) and the VM (its first
// vhost-user message).
package vhostuser

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"time"
)

// Listen creates a listening unix socket at path and returns its
// descriptor, to pass as a socket unit does. The socket file stays when
// the descriptor is closed, as systemd's does while the unit runs.
func Listen(path string) (*os.File, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	return ln.File()
}

// Activated returns a command that runs name with socket as fd 3, the way
// systemd starts a socket-activated service: LISTEN_FDS=1,
// LISTEN_FDNAMES=vhost-user and LISTEN_PID set to its own pid, which a
// shell sets just before it execs name (exec keeps the pid).
func Activated(socket *os.File, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, name}, args...)...)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=vhost-user")
	cmd.ExtraFiles = []*os.File{socket}
	return cmd
}

// Datagram is one sd_notify message and when it was read.
type Datagram struct {
	State string
	At    time.Time
}

// NotifySocket pretends to be systemd's notification socket: it reads each
// datagram sent to Path and hands it over, in order, on C.
type NotifySocket struct {
	Path string
	C    <-chan Datagram
	conn *net.UnixConn
}

// ListenNotify binds a NotifySocket at path; point NOTIFY_SOCKET at it.
func ListenNotify(path string) (*NotifySocket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	ch := make(chan Datagram, 1024)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- Datagram{State: string(buf[:n]), At: time.Now()}
		}
	}()
	return &NotifySocket{Path: path, C: ch, conn: conn}, nil
}

// Close stops reading; C is closed once the reader has ended.
func (n *NotifySocket) Close() error { return n.conn.Close() }

// Probe connects to a vhost-user socket like a VM and checks that a live
// backend answers GET_FEATURES (GetFeatures). The caller closes the
// connection, which ends the session.
func Probe(path string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	if err := GetFeatures(c, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// GetFeatures sends VHOST_USER_GET_FEATURES (12 bytes: request 1, flags
// 0x1 for version 1, size 0) on an open connection and checks that the
// reply is a 12-byte header with flags 0x5 (version 1 | reply) and size 8,
// followed by the u64 feature bits (vhost-user protocol: GET_FEATURES).
func GetFeatures(c net.Conn, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		return fmt.Errorf("send GET_FEATURES: %w", err)
	}
	var reply [20]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return fmt.Errorf("read GET_FEATURES reply: %w", err)
	}
	req, flags, size := binary.LittleEndian.Uint32(reply[0:]), binary.LittleEndian.Uint32(reply[4:]), binary.LittleEndian.Uint32(reply[8:])
	if req != 1 || flags != 5 || size != 8 {
		return fmt.Errorf("unexpected GET_FEATURES reply header: request %d flags %#x size %d", req, flags, size)
	}
	return nil
}
