// Package fdstore keeps named descriptors in systemd's file descriptor store
// across the service's restarts (sd_pid_notify_with_fds(3), FDSTORE=1), and
// finds them by name when they come back at the next start.
package fdstore

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/scm"
)

// MaxNameLen is the longest name systemd accepts (FDNAME_MAX).
const MaxNameLen = 255

// SocketName is the FileDescriptorName= of the vhost-user socket unit; the
// store's names must differ from it, so that the socket is never taken for a
// stored descriptor nor the reverse.
const SocketName = activation.SocketName

// maxFiles is the kernel's limit of descriptors in one message (SCM_MAX_FD).
const maxFiles = 253

// Notifier sends descriptors to systemd's notification socket.
type Notifier struct {
	// Socket is $NOTIFY_SOCKET: a path, or an abstract socket name that
	// starts with '@'. Empty when not run by systemd.
	Socket string
}

// FromEnv reads NOTIFY_SOCKET with getenv (os.Getenv in the shim).
func FromEnv(getenv func(string) string) Notifier {
	return Notifier{Socket: getenv("NOTIFY_SOCKET")}
}

// Store sends files to systemd's store under name (FDSTORE=1, FDNAME=name).
// The unit needs FileDescriptorStoreMax= large enough; systemd keeps its
// own copies, so the caller still owns and closes files. Storing under a
// name already stored adds to it: Remove it first to replace it.
//
// It returns (false, nil) when not run by systemd (Socket is empty),
// (false, err) if the name or the send fails, and (true, nil) once the
// message is sent, as daemon.SdNotify does. Systemd does not answer, so a
// refusal on its side (FileDescriptorStoreMax= too small) shows only in its
// journal.
func (n Notifier) Store(name string, files ...*os.File) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	if len(files) == 0 || len(files) > maxFiles {
		return false, fmt.Errorf("store %q: %d descriptors, want 1 to %d", name, len(files), maxFiles)
	}
	return n.send("FDSTORE=1\nFDNAME="+name, files)
}

// Remove drops every descriptor stored under name (FDSTOREREMOVE=1,
// FDNAME=name). It returns as Store does.
func (n Notifier) Remove(name string) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	return n.send("FDSTOREREMOVE=1\nFDNAME="+name, nil)
}

func (n Notifier) send(state string, files []*os.File) (bool, error) {
	if n.Socket == "" {
		return false, nil
	}
	oob, err := scm.Rights(files)
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("send %s to systemd: %w", firstLine(state), err)
	}
	defer unix.Close(sock)
	err = unix.Sendmsg(sock, []byte(state), oob, &unix.SockaddrUnix{Name: n.Socket}, 0)
	runtime.KeepAlive(files)
	if err != nil {
		return false, fmt.Errorf("send %s to systemd at %s: %w", firstLine(state), n.Socket, err)
	}
	return true, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// ValidName checks name against systemd's rules for FDNAME= (at most 255
// printable ASCII characters, no ':', which separates LISTEN_FDNAMES) and
// this package's own: not empty, and not SocketName.
func ValidName(name string) error {
	const fix = "use a short name of printable ASCII, such as ring0-kick"
	switch {
	case name == "":
		return fmt.Errorf("fd store name is empty: %s", fix)
	case len(name) > MaxNameLen:
		return fmt.Errorf("fd store name %.20q... is %d bytes, systemd allows at most %d: %s", name, len(name), MaxNameLen, fix)
	case name == SocketName:
		return fmt.Errorf("fd store name %q is the socket's own (FileDescriptorName=): %s", name, fix)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("fd store name %q has %q at byte %d, systemd allows no ':' and only printable ASCII: %s", name, c, i, fix)
		}
	}
	return nil
}

// ByName groups the descriptors systemd passed back from its store at start
// (activation.Socket.Stored, named by LISTEN_FDNAMES) by name, each name's
// in the order passed: several descriptors stored under one name come back
// together. The socket (SocketName) is left out. It reads what go-systemd's
// activation.FilesWithNames would, without linking go-systemd's activation
// package (see activation.Files).
func ByName(files []*os.File) map[string][]*os.File {
	m := make(map[string][]*os.File)
	for _, f := range files {
		if f == nil || f.Name() == SocketName {
			continue
		}
		m[f.Name()] = append(m[f.Name()], f)
	}
	return m
}
