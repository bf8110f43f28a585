package bench

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envWrites is how many times the eventfd helper writes its fd 3.
const envWrites = "BENCH_EVENTFD_WRITES"

// helperEventfd writes 1 to fd 3 (an eventfd) BENCH_EVENTFD_WRITES times
// and reads it back each time, as QEMU kicks a ring and virtiofsd takes the
// kick, 100 µs apart.
func helperEventfd() int {
	n, _ := strconv.Atoi(os.Getenv(envWrites))
	one, buf := []byte{1, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 8)
	for i := 0; i < n; i++ {
		if _, err := unix.Write(3, one); err != nil {
			return 1
		}
		unix.Read(3, buf)
		time.Sleep(100 * time.Microsecond)
	}
	return 0
}

// BenchmarkEventfdHeldAsFile is what a Go process pays while another
// process writes an eventfd it holds a duplicate of: held as an *os.File
// (os.NewFile of a non-blocking descriptor, as QEMU's kick and call fds
// are, registers it with Go's netpoller, edge-triggered, so that every
// write wakes the process), or as a bare descriptor. The front keeps such
// duplicates of every ring's kick and call fds for a session's life. The
// process has one goroutine waiting in the netpoller, as the shim's
// readers of its vhost-user connections do. Metric: the process's CPU time
// (user + system) per write of the other process.
func BenchmarkEventfdHeldAsFile(b *testing.B) {
	for _, asFile := range []bool{false, true} {
		name := "bare-fd"
		if asFile {
			name = "os-file"
		}
		b.Run(name, func(b *testing.B) {
			efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(efd)
			if asFile {
				dup, err := unix.FcntlInt(uintptr(efd), unix.F_DUPFD_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				f := os.NewFile(uintptr(dup), "eventfd")
				defer f.Close()
			}
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			go func() { r.Read(make([]byte, 1)); r.Close() }()
			exe, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			b.ResetTimer()
			pid, err := syscall.ForkExec(exe, []string{exe}, &syscall.ProcAttr{
				Env:   append(os.Environ(), envHelper+"=eventfd", envWrites+"="+strconv.Itoa(b.N)),
				Files: []uintptr{0, 1, 2, uintptr(efd)},
			})
			if err != nil {
				b.Fatal(err)
			}
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
				b.Fatalf("the writer: %v, %v", err, ws)
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := (after.Utime.Nano() + after.Stime.Nano()) - (before.Utime.Nano() + before.Stime.Nano())
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/write")
		})
	}
}
