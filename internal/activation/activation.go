// Package activation takes the one vhost-user listening socket that systemd
// passed to this process, following sd_listen_fds(3).
package activation

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// ErrActivation is wrapped by every error of this package, so that callers can
// map all of them to one exit code with errors.Is.
var ErrActivation = errors.New("socket activation")

// Error is a socket handed over by systemd that cannot be used, and why.
type Error struct {
	Reason string // what is wrong, in a few words, for humans
	Fix    string // what to do about it
}

func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Reason
	}
	return e.Reason + ": " + e.Fix
}

// Is makes errors.Is(err, ErrActivation) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrActivation }

// ExitCode is the shim's exit status for every activation error.
func (e *Error) ExitCode() int { return exitcode.Activation }

const howToRun = "run it from a .socket unit (systemctl start virtiofsd@NAME.socket) " +
	"or by hand under systemd-socket-activate -l /run/virtiofsd/NAME.sock virtiofsd-shim run ..."

// Socket is the listening socket systemd passed, checked to be usable by virtiofsd.
type Socket struct {
	File *os.File // the descriptor, close-on-exec
	Name string   // its LISTEN_FDNAMES entry (FileDescriptorName=), or LISTEN_FD_3
	Path string   // the address it listens on, e.g. /run/virtiofsd/vm1.sock
	// Stored are the descriptors passed beside the socket: systemd's file
	// descriptor store, named by their FDNAME= (fdstore.ByName groups
	// them). They are neither checked nor closed.
	Stored []*os.File
}

// SocketName is the socket unit's FileDescriptorName=, which tells the
// socket apart from the descriptors of systemd's store passed beside it.
const SocketName = "vhost-user"

// Environment is what Listen reads from the process environment.
type Environment struct {
	Getenv func(string) string
	Getpid func() int
	// Files returns the passed descriptors, as go-systemd's activation.Files.
	Files func(unsetEnv bool) []*os.File
}

// FromOS reads the real process environment.
func FromOS() Environment {
	return Environment{Getenv: os.Getenv, Getpid: os.Getpid, Files: Files}
}

// listenFdsStart is SD_LISTEN_FDS_START, the first passed descriptor.
const listenFdsStart = 3

// Files is go-systemd's activation.Files, which a test compares it with:
// the descriptors passed by the sd_listen_fds(3) protocol, named by
// LISTEN_FDNAMES (or LISTEN_FD_N), close-on-exec; unsetEnv removes LISTEN_*
// from the environment. It is copied here because go-systemd's package also
// holds TLS listeners: linking crypto/tls put about 50 KB of type data in
// the binary, which the loader relocates, so dirties, in every shim process.
func Files(unsetEnv bool) []*os.File {
	if unsetEnv {
		defer func() {
			_ = os.Unsetenv("LISTEN_PID")
			_ = os.Unsetenv("LISTEN_FDS")
			_ = os.Unsetenv("LISTEN_FDNAMES")
		}()
	}
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	files := make([]*os.File, 0, n)
	for fd := listenFdsStart; fd < listenFdsStart+n; fd++ {
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i := fd - listenFdsStart; i < len(names) && names[i] != "" {
			name = names[i]
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files
}

// Listen takes the one socket from LISTEN_FDS (the one named SocketName
// when systemd's file descriptor store passed more, which it returns in
// Socket.Stored), removes LISTEN_* from the environment so no child
// inherits them, and checks the socket with Check.
func Listen(env Environment) (*Socket, error) {
	pidStr := env.Getenv("LISTEN_PID")
	nStr := env.Getenv("LISTEN_FDS")
	if nStr == "" && pidStr == "" {
		return nil, &Error{Reason: "no socket was passed (LISTEN_FDS is not set)", Fix: howToRun}
	}
	if pid, err := strconv.Atoi(pidStr); err != nil || pid != env.Getpid() {
		return nil, &Error{
			Reason: fmt.Sprintf("LISTEN_PID=%q is not this process (pid %d): the sockets were meant for another process", pidStr, env.Getpid()),
			Fix:    "do not run virtiofsd-shim through a wrapper that forks; use ExecStart= directly or systemd-socket-activate",
		}
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 {
		return nil, &Error{Reason: fmt.Sprintf("LISTEN_FDS=%q is not a number of descriptors", nStr), Fix: howToRun}
	}
	names := env.Getenv("LISTEN_FDNAMES")
	switch {
	case n == 0:
		return nil, &Error{Reason: "no socket was passed (LISTEN_FDS=0)", Fix: howToRun}
	case n > 1 && countName(names, SocketName) != 1:
		return nil, &Error{
			Reason: fmt.Sprintf("%d sockets were passed (LISTEN_FDNAMES=%q), want exactly one, or one named %s beside the fd store's", n, names, SocketName),
			Fix:    "give the .socket unit a single ListenStream=, FileDescriptorName=" + SocketName + " and no Sockets= on the service",
		}
	}
	files := env.Files(true)
	if len(files) != n {
		closeFiles(files)
		return nil, &Error{Reason: "no socket was passed", Fix: howToRun}
	}
	var sock *os.File
	var stored []*os.File
	for _, f := range files {
		if sock == nil && (n == 1 || f.Name() == SocketName) {
			sock = f
		} else {
			stored = append(stored, f)
		}
	}
	s, err := Check(sock)
	if err != nil {
		closeFiles(stored) // the shim exits; systemd keeps its own copies
		return nil, err
	}
	s.Stored = stored
	return s, nil
}

func countName(names, name string) int {
	c := 0
	for _, n := range strings.Split(names, ":") {
		if n == name {
			c++
		}
	}
	return c
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// Check verifies that f is an AF_UNIX SOCK_STREAM socket in listening state,
// the only kind virtiofsd can serve vhost-user on, and learns its path.
// On error, f is closed.
func Check(f *os.File) (*Socket, error) {
	s, err := check(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func check(f *os.File) (*Socket, error) {
	fd := int(f.Fd())
	what := fmt.Sprintf("descriptor %d (%s)", fd, f.Name())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &Error{Reason: fmt.Sprintf("%s cannot be inspected: %v", what, err), Fix: howToRun}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, &Error{
			Reason: fmt.Sprintf("%s is not a socket but a %s", what, fileType(st.Mode)),
			Fix:    "the unit that starts virtiofsd-shim must be triggered by a .socket unit with ListenStream=/run/virtiofsd/NAME.sock",
		}
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, &Error{Reason: fmt.Sprintf("%s: read socket family: %v", what, err)}
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, &Error{Reason: fmt.Sprintf("%s: read socket type: %v", what, err)}
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return nil, &Error{
			Reason: fmt.Sprintf("%s is an %s %s socket, vhost-user needs an AF_UNIX SOCK_STREAM one", what, familyName(domain), typeName(typ)),
			Fix:    "use ListenStream=/run/virtiofsd/NAME.sock (a path, not a port or ListenDatagram=/ListenSequentialPacket=)",
		}
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, &Error{Reason: fmt.Sprintf("%s: read listening state: %v", what, err)}
	}
	if listening == 0 {
		return nil, &Error{
			Reason: fmt.Sprintf("%s is not listening (bound or connected, but listen(2) was never called)", what),
			Fix:    "pass a listening socket: set Accept=no on the .socket unit",
		}
	}
	s := &Socket{File: f, Name: f.Name()}
	if sa, err := unix.Getsockname(fd); err == nil {
		if un, ok := sa.(*unix.SockaddrUnix); ok {
			s.Path = un.Name
		}
	}
	return s, nil
}

func fileType(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFIFO:
		return "pipe"
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return "file of unknown type"
}

func familyName(d int) string {
	switch d {
	case unix.AF_UNIX:
		return "AF_UNIX"
	case unix.AF_INET:
		return "AF_INET"
	case unix.AF_INET6:
		return "AF_INET6"
	case unix.AF_NETLINK:
		return "AF_NETLINK"
	case unix.AF_VSOCK:
		return "AF_VSOCK"
	}
	return "family " + strconv.Itoa(d)
}

func typeName(t int) string {
	switch t {
	case unix.SOCK_STREAM:
		return "SOCK_STREAM"
	case unix.SOCK_DGRAM:
		return "SOCK_DGRAM"
	case unix.SOCK_SEQPACKET:
		return "SOCK_SEQPACKET"
	case unix.SOCK_RAW:
		return "SOCK_RAW"
	}
	return "type " + strconv.Itoa(t)
}

// String describes the socket for STATUS= and logs.
func (s *Socket) String() string {
	if s.Path != "" {
		return s.Path
	}
	return strings.TrimSpace(s.Name)
}
