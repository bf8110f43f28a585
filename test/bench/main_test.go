package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var reportPath = flag.String("report", "", "run the system measurements and write the report (Markdown) to this `file`")

// The test binary doubles as a child process (the os/exec TestMain pattern),
// chosen by BENCH_HELPER:
//
//	flood:      virtiofsd's readiness line, then BENCH_LINES lines on stderr,
//	            one write each, in the C virtiofsd's format or, with
//	            BENCH_FORMAT=rust, the Rust one's; the time the lines took
//	            (ns) goes to BENCH_RESULT; then exit 0.
//	drain:      runs BENCH_DRAIN_CHILD (with BENCH_HELPER=BENCH_CHILD_HELPER)
//	            with its stderr on /dev/null (BENCH_DRAIN=null) or in a
//	            pipe of drainPipeSize read in large reads and thrown away
//	            (BENCH_DRAIN=pipe): the floor of any reader.
//	readystamp: after 20 ms, stamp the wall clock (ns), write virtiofsd's readiness line,
//	            then write the stamp to BENCH_RESULT (atomically, by rename);
//	            then wait for SIGTERM.
//	fsops:      the system calls virtiofsd makes for a guest's create, lookup,
//	            open and unlink, on BENCH_FSOPS_FILES files in BENCH_FSOPS_DIR;
//	            each phase's CPU time goes to BENCH_RESULT (syscalls_test.go).
//	eventfd:    writes fd 3 (an eventfd) BENCH_EVENTFD_WRITES times, reading
//	            it back each time (eventfd_test.go).
const (
	envHelper = "BENCH_HELPER"
	envLines  = "BENCH_LINES"
	envResult = "BENCH_RESULT"
	envFormat = "BENCH_FORMAT"
	envDrain  = "BENCH_DRAIN"
	envChild  = "BENCH_DRAIN_CHILD"
	envChildH = "BENCH_CHILD_HELPER"
	// The Rust virtiofsd's format, as it prints on a pipe.
	rustPrefix = "[2026-11-30T10:00:00Z INFO  virtiofsd] "
	readyLine  = "virtio_session_mount: Waiting for vhost-user socket connection...\n"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "flood":
		os.Exit(helperFlood())
	case "readystamp":
		os.Exit(helperReadyStamp())
	case "drain":
		os.Exit(helperDrain())
	case "fsops":
		os.Exit(helperFSOps())
	case "eventfd":
		os.Exit(helperEventfd())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", envHelper, os.Getenv(envHelper))
		os.Exit(2)
	}
}

func helperFlood() int {
	n, _ := strconv.Atoi(os.Getenv(envLines))
	prefix := "fake virtiofsd: "
	if os.Getenv(envFormat) == "rust" {
		prefix = rustPrefix
		os.Stderr.WriteString(rustPrefix + "Waiting for vhost-user socket connection...\n")
	} else {
		os.Stderr.WriteString(readyLine)
	}
	buf := make([]byte, 0, 128)
	start := time.Now()
	for i := 0; i < n; i++ {
		buf = append(append(buf[:0], prefix...), "flood line "...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, '\n')
		if _, err := os.Stderr.Write(buf); err != nil {
			return 1
		}
	}
	elapsed := time.Since(start)
	if p := os.Getenv(envResult); p != "" {
		if err := os.WriteFile(p, []byte(strconv.FormatInt(int64(elapsed), 10)), 0o644); err != nil {
			return 1
		}
	}
	return 0
}

func helperReadyStamp() int {
	// Let this Go runtime's start-up threads settle first, as the real
	// virtiofsd prints the line after its own setup, not at exec.
	time.Sleep(20 * time.Millisecond)
	stamp := time.Now().UnixNano()
	syscall.Write(2, []byte(readyLine))
	p := os.Getenv(envResult)
	if err := os.WriteFile(p+".tmp", []byte(strconv.FormatInt(stamp, 10)), 0o644); err != nil {
		return 1
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return 1
	}
	select {} // until SIGTERM
}

// drainPipeSize is the floor's pipe: as large as an unprivileged process
// may make it (fs.pipe-max-size), like the shim's.
const drainPipeSize = 1 << 20

func helperDrain() int {
	child := exec.Command(os.Getenv(envChild))
	child.Env = append(os.Environ(), envHelper+"="+os.Getenv(envChildH))
	if os.Getenv(envDrain) == "null" {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return 1
		}
		child.Stderr = null
		if err := child.Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	// A blocking pipe, read with read(2) as cat(1) does: a descriptor in
	// Go's netpoller would cost the writer an epoll wake-up per write.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 1
	}
	unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, drainPipeSize)
	w := os.NewFile(uintptr(p[1]), "pipe")
	child.Stderr = w
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w.Close()
	buf := make([]byte, drainPipeSize)
	for {
		n, err := unix.Read(p[0], buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break
		}
	}
	if err := child.Wait(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
