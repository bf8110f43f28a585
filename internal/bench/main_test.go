package bench

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

var reportPath = flag.String("report", "", "run the system measurements and write the report (Markdown) to this `file`")

// The test binary doubles as a child process (the os/exec TestMain pattern),
// chosen by BENCH_HELPER:
//
//	flood:      virtiofsd's readiness line, then BENCH_LINES lines on stderr,
//	            one write each; the time the lines took (ns) goes to
//	            BENCH_RESULT; then exit 0.
//	readystamp: after 20 ms, stamp the wall clock (ns), write virtiofsd's readiness line,
//	            then write the stamp to BENCH_RESULT (atomically, by rename);
//	            then wait for SIGTERM.
const (
	envHelper = "BENCH_HELPER"
	envLines  = "BENCH_LINES"
	envResult = "BENCH_RESULT"
	readyLine = "virtio_session_mount: Waiting for vhost-user socket connection...\n"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envHelper) {
	case "":
		os.Exit(m.Run())
	case "flood":
		os.Exit(helperFlood())
	case "readystamp":
		os.Exit(helperReadyStamp())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", envHelper, os.Getenv(envHelper))
		os.Exit(2)
	}
}

func helperFlood() int {
	n, _ := strconv.Atoi(os.Getenv(envLines))
	os.Stderr.WriteString(readyLine)
	buf := make([]byte, 0, 64)
	start := time.Now()
	for i := 0; i < n; i++ {
		buf = append(buf[:0], "fake virtiofsd: flood line "...)
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
