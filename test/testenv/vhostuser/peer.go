// Package vhostuser plays the two outer peers of a virtiofsd-shim session in
// tests run without a service manager: systemd (the listening socket passed
// as fd 3, a NOTIFY_SOCKET that reads the states back) and the VM (its first
// vhost-user message).
package vhostuser

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	protocol "github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
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
// datagram sent to Path and hands it over, in order, on C. The file
// descriptor store's datagrams (FDSTORE=1, FDSTOREREMOVE=1: a front
// session keeps itself in the store as it runs) are left out, and the
// descriptors they carry closed: they say nothing of the service's state.
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
			state := string(buf[:n])
			if strings.HasPrefix(state, "FDSTORE=1") || strings.HasPrefix(state, "FDSTOREREMOVE=1") {
				continue
			}
			ch <- Datagram{State: state, At: time.Now()}
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

// GetFeatures sends VHOST_USER_GET_FEATURES on an open connection and
// checks that the reply is a well-formed GET_FEATURES reply (version 1,
// the reply flag, the u64 feature bits), as internal/vhostuser reads it.
func GetFeatures(c net.Conn, timeout time.Duration) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("send GET_FEATURES: %T is not a unix socket connection", c)
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	reply, err := protocol.NewConn(uc).Call(protocol.GetFeatures, nil, nil, false)
	if err != nil {
		return fmt.Errorf("GET_FEATURES: %w", err)
	}
	return reply.Close()
}
