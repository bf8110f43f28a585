// Package fakevirtiofsd lets a test binary impersonate virtiofsd, in either
// flavor's exact output, and misbehave on demand (the os/exec TestMain
// pattern). It exists for unit tests only, beside tests with the real one.
//
// A test's TestMain calls Main first; the test then runs os.Args[0] with
// Env(flavor, mode) added to the environment.
package fakevirtiofsd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Modes of misbehaviour.
const (
	Ready            = "ready"              // serve one client like the real one
	NeverReady       = "never-ready"        // print a line, then hang without the readiness line
	CrashBeforeReady = "crash-before-ready" // print an error and exit 1 before readiness
	CrashAfterReady  = "crash-after-ready"  // become ready, then die by SIGKILL
	IgnoreSIGTERM    = "ignore-sigterm"     // become ready and ignore SIGTERM
	Flood            = "flood"              // become ready, write FAKE_VIRTIOFSD_LINES lines, then serve
)

// Flavors, as launch names them.
const (
	C    = "c"
	Rust = "rust"
)

const (
	envGuard  = "FAKE_VIRTIOFSD"
	envFlavor = "FAKE_VIRTIOFSD_FLAVOR"
	envMode   = "FAKE_VIRTIOFSD_MODE"
	envLines  = "FAKE_VIRTIOFSD_LINES"
)

// Env returns the environment entries that make the test binary a fake
// virtiofsd of flavor in mode.
func Env(flavor, mode string) []string {
	return []string{envGuard + "=1", envFlavor + "=" + flavor, envMode + "=" + mode}
}

// FloodEnv sets the number of lines Flood writes.
func FloodEnv(n int) string { return envLines + "=" + strconv.Itoa(n) }

// Main impersonates virtiofsd and exits when the environment asks for it;
// otherwise it returns at once.
func Main() {
	if os.Getenv(envGuard) == "" {
		return
	}
	os.Exit(run(os.Args[1:], os.Getenv(envFlavor), os.Getenv(envMode)))
}

type fake struct {
	flavor string
	out    io.Writer
}

// say prints one line in the flavor's format, in one write as virtiofsd does.
func (f *fake) say(level, msg string) {
	var line string
	if f.flavor == Rust {
		line = fmt.Sprintf("[%s %-5s virtiofsd] %s\n", time.Now().UTC().Format("2006-01-02T15:04:05Z"), level, msg)
	} else {
		line = msg + "\n"
	}
	io.WriteString(f.out, line)
}

func run(args []string, flavor, mode string) int {
	f := &fake{flavor: flavor, out: os.Stderr}
	for _, a := range args {
		switch a {
		case "--version":
			if flavor == Rust {
				fmt.Println("virtiofsd 1.13.3")
			} else {
				fmt.Println("virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
				fmt.Println("Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers")
			}
			return 0
		case "--syslog", "--daemonize", "-d":
			f.say("ERROR", "fake virtiofsd: refusing "+a+": the shim must never pass it")
			return 64
		}
	}
	if problem := checkInheritance(args); problem != "" {
		f.say("ERROR", "fake virtiofsd: "+problem)
		return 65
	}
	ln, err := net.FileListener(os.NewFile(3, "vhost-user socket"))
	if err != nil {
		f.say("ERROR", "fake virtiofsd: fd 3 is not a listener: "+err.Error())
		return 66
	}

	terms := make(chan os.Signal, 1)
	if mode == NeverReady || mode == IgnoreSIGTERM {
		// Ignored before the readiness line, not after it: a SIGTERM sent
		// the moment the line appears must find it ignored. Go's
		// signal.Ignore, racing a signal that is being delivered, can
		// still let the default action (death) through.
		signal.Ignore(syscall.SIGTERM)
		signal.Notify(terms, syscall.SIGINT, syscall.SIGHUP)
	} else {
		signal.Notify(terms, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	}
	onTerm := func() int {
		if flavor == Rust {
			return 1 // _exit(1) in its signal handler
		}
		f.say("INFO", "virtio_loop: Exit")
		return 0
	}

	switch mode {
	case NeverReady:
		f.say("INFO", "fake virtiofsd: setting up, and never getting there")
		select {}
	case CrashBeforeReady:
		if flavor == Rust {
			f.say("ERROR", "Error entering sandbox: DropSupplementalGroups(Os { code: 1, kind: PermissionDenied })")
		} else {
			f.say("INFO", "fuse: failed to stat source (\"/srv/missing\"): No such file or directory")
		}
		return 1
	}

	if flavor == Rust {
		f.say("INFO", "Waiting for vhost-user socket connection...")
	} else {
		f.say("INFO", "virtio_session_mount: Waiting for vhost-user socket connection...")
	}

	switch mode {
	case CrashAfterReady:
		time.Sleep(50 * time.Millisecond)
		f.say("ERROR", "fake virtiofsd: crashing now")
		signal.Reset()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case IgnoreSIGTERM:
		select {}
	case Flood:
		n, _ := strconv.Atoi(os.Getenv(envLines))
		for i := 0; i < n; i++ {
			f.say("DEBUG", "fake virtiofsd: flood line "+strconv.Itoa(i))
		}
	}

	conns := make(chan net.Conn)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
	}()
	var conn net.Conn
	select {
	case <-terms:
		return onTerm()
	case conn = <-conns:
	}
	if flavor == Rust {
		f.say("INFO", "Client connected, servicing requests")
	} else {
		f.say("INFO", "virtio_session_mount: Received vhost-user socket connection")
	}
	hungUp := make(chan struct{})
	go func() {
		serve(conn)
		close(hungUp)
	}()
	select {
	case <-terms:
		return onTerm()
	case <-hungUp:
	}
	if flavor == Rust {
		f.say("INFO", "Client disconnected, shutting down")
	} else {
		f.say("INFO", "virtio_loop: Exit")
	}
	return 0
}

// serve answers VHOST_USER_GET_FEATURES like a live backend, until hang-up.
func serve(c net.Conn) {
	defer c.Close()
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		req, size := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[8:])
		if size > 0 {
			if _, err := io.CopyN(io.Discard, c, int64(size)); err != nil {
				return
			}
		}
		if req == 1 { // GET_FEATURES
			var reply [20]byte
			binary.LittleEndian.PutUint32(reply[0:], 1)
			binary.LittleEndian.PutUint32(reply[4:], 0x5)
			binary.LittleEndian.PutUint32(reply[8:], 8)
			binary.LittleEndian.PutUint64(reply[12:], 1<<30|1<<32)
			c.Write(reply[:])
		}
	}
}

// checkInheritance reports what the shim should not have passed on: the
// socket not as --fd=3, systemd's variables, or extra descriptors.
func checkInheritance(args []string) string {
	hasFD := false
	for _, a := range args {
		if a == "--fd=3" {
			hasFD = true
		}
	}
	if !hasFD {
		return "no --fd=3 in " + strings.Join(args, " ")
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if _, ok := os.LookupEnv(v); ok {
			return "inherited " + v + " from the shim"
		}
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "read /proc/self/fd: " + err.Error()
	}
	var leaked []string
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		if fd <= 3 {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed since: ReadDir's own descriptor
		}
		if strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "/proc/") ||
			strings.HasPrefix(target, "/sys/fs/cgroup/") {
			continue // this Go runtime's poller and cgroup CPU limits, and ReadDir's own descriptor
		}
		leaked = append(leaked, e.Name()+" -> "+target)
	}
	if len(leaked) > 0 {
		return "inherited descriptors beyond 3: " + strings.Join(leaked, ", ")
	}
	return ""
}
