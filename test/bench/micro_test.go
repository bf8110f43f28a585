package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// classifyLines are one line of each shape virtiofsd.Classify reads.
var classifyLines = []struct {
	name string
	fl   virtiofsd.Flavor
	line string
}{
	{"c-ready", virtiofsd.C, "virtio_session_mount: Waiting for vhost-user socket connection...\n"},
	{"c-plain", virtiofsd.C, "virtio_loop: Unexpected poll revents 19\n"},
	{"c-debug", virtiofsd.C, "[2024-07-08 03:39:41.123456+0000] [ID: 00000042] lo_lookup(parent=1, name=somefile)\n"},
	{"rust", virtiofsd.Rust, "[2024-07-08T03:39:41Z INFO  virtiofsd] Client connected, servicing requests\n"},
}

func BenchmarkClassify(b *testing.B) {
	for _, c := range classifyLines {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				virtiofsd.Classify(c.fl, c.line)
			}
		})
	}
}

// discardSink counts what it is given.
type discardSink struct{ n atomic.Uint64 }

func (s *discardSink) Write(logsink.Record, map[string]string) error {
	s.n.Add(1)
	return nil
}

// BenchmarkForwarderOffer offers lines as fast as one reader can; the sink
// keeps up, so drops are rare. It reports the share dropped.
func BenchmarkForwarderOffer(b *testing.B) {
	sink := &discardSink{}
	f := logsink.NewForwarder(sink, logsink.Limits{}, nil)
	r := logsink.Record{Message: "virtio_loop: Exit", Priority: journal.PriInfo, PID: 42}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Offer(r)
	}
	b.StopTimer()
	forwarded, dropped, _ := f.Close()
	b.ReportMetric(float64(dropped)/float64(forwarded+dropped), "dropped/op")
}

// listener is a unix listening socket to pass as virtiofsd's fd 3.
func listener(tb testing.TB) *os.File {
	tb.Helper()
	dir := testdir.Short(tb)
	f, err := vhostuser.Listen(filepath.Join(dir, "s.sock"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// countLines counts the lines the supervisor offers.
type countLines struct{ n atomic.Int64 }

func (c *countLines) Offer(logsink.Record) bool { c.n.Add(1); return true }

// BenchmarkStderrReader measures the shim's stderr path, from the child's
// write(2) to launch.Supervisor's Lines.Offer: one op is one line; the child
// (this binary, flood helper) writes b.N lines, one write each.
func BenchmarkStderrReader(b *testing.B) {
	sock := listener(b)
	lines := &countLines{}
	sv := &launch.Supervisor{
		Path:   os.Args[0],
		Env:    append(os.Environ(), envHelper+"=flood", envLines+"="+strconv.Itoa(b.N)),
		Flavor: virtiofsd.C,
		Socket: sock,
		Lines:  lines,
		Log:    quietLog(),
	}
	b.ResetTimer()
	if err := sv.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if got := lines.n.Load(); got != int64(b.N)+1 {
		b.Fatalf("supervisor read %d lines, want %d", got, b.N+1)
	}
}

// notifyReceiver pretends to be systemd's notify socket (vhostuser.NotifySocket)
// and hands over when each READY=1 datagram was read, by the wall clock.
type notifyReceiver struct {
	path  string
	ready chan int64
}

func newNotifyReceiver(tb testing.TB) *notifyReceiver {
	tb.Helper()
	dir := testdir.Short(tb)
	ns, err := vhostuser.ListenNotify(filepath.Join(dir, "notify"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	n := &notifyReceiver{path: ns.Path, ready: make(chan int64, 16)}
	go func() {
		for d := range ns.C {
			if strings.HasPrefix(d.State, "READY=1") {
				n.ready <- d.At.UnixNano() // stamped when read, not when relayed
			}
		}
	}()
	return n
}

// sentNotifier is launch.SystemdNotifier, stamping when READY=1 has been
// sent: sendmsg(2) returned, the datagram is in the notify socket's queue.
type sentNotifier struct {
	launch.SystemdNotifier
	sent chan int64
}

func (n sentNotifier) Notify(state string) error {
	err := n.SystemdNotifier.Notify(state)
	if strings.HasPrefix(state, "READY=1") {
		n.sent <- time.Now().UnixNano()
	}
	return err
}

// readinessSample is one session's latencies from the readiness line.
type readinessSample struct {
	sent, read Sample // to READY=1 sent (in the socket's queue), and read by the receiver
}

// readiness runs n sessions of the readystamp helper under
// launch.Supervisor (notifying a real unixgram socket through
// launch.SystemdNotifier, lines to a logsink.Forwarder as in the shim) and
// returns, per session, the time from the helper's stamp, taken right before
// it writes the readiness line, to READY=1 sent to the notify socket (sendmsg
// returned) and to READY=1 read from it by a goroutine of this process.
func readiness(tb testing.TB, n int) (readinessSample, error) {
	var none readinessSample
	sock := listener(tb)
	rcv := newNotifyReceiver(tb)
	old, had := os.LookupEnv("NOTIFY_SOCKET")
	os.Setenv("NOTIFY_SOCKET", rcv.path)
	defer func() {
		if had {
			os.Setenv("NOTIFY_SOCKET", old)
		} else {
			os.Unsetenv("NOTIFY_SOCKET")
		}
	}()
	stampFile := filepath.Join(filepath.Dir(rcv.path), "stamp")
	env := virtiofsd.ChildEnv(append(os.Environ(), envHelper+"=readystamp", envResult+"="+stampFile), virtiofsd.C)
	var s readinessSample
	notifier := sentNotifier{sent: make(chan int64, 1)}
	for i := 0; i < n; i++ {
		os.Remove(stampFile)
		fwd := logsink.NewForwarder(&discardSink{}, logsink.Limits{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		sv := &launch.Supervisor{
			Path: os.Args[0], Env: env, Flavor: virtiofsd.C, Socket: sock,
			Notifier: notifier, Lines: fwd, Log: quietLog(),
			StopTimeout: 5 * time.Second,
		}
		done := make(chan error, 1)
		go func() { done <- sv.Run(ctx) }()
		var readAt, sentAt int64
		select {
		case readAt = <-rcv.ready:
			sentAt = <-notifier.sent
		case err := <-done:
			cancel()
			fwd.Close()
			return none, fmt.Errorf("session ended before READY=1: %v", err)
		case <-time.After(10 * time.Second):
			cancel()
			<-done
			fwd.Close()
			return none, fmt.Errorf("no READY=1 within 10s")
		}
		// The helper writes its stamp after the line: wait for it.
		var b []byte
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if b, err = os.ReadFile(stampFile); err == nil || time.Now().After(deadline) {
				break
			}
		}
		cancel()
		if rerr := <-done; rerr != nil {
			return none, fmt.Errorf("stop the session: %v", rerr)
		}
		fwd.Close()
		if err != nil {
			return none, fmt.Errorf("read the helper's stamp: %v", err)
		}
		stamp, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return none, err
		}
		s.sent = append(s.sent, time.Duration(sentAt-stamp))
		s.read = append(s.read, time.Duration(readAt-stamp))
	}
	return s, nil
}

// BenchmarkReadiness: one op is one session (start the child, READY=1, stop
// it); the metrics are the latency from the readiness line to READY=1 sent
// (p50, p99) and to READY=1 read back (p99-read).
func BenchmarkReadiness(b *testing.B) {
	s, err := readiness(b, b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(s.sent.Median().Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(s.sent.Quantile(0.99).Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(s.read.Quantile(0.99).Nanoseconds())/1e3, "p99-read-µs")
}

func classifyOne(fl virtiofsd.Flavor, line string) virtiofsd.Line {
	return virtiofsd.Classify(fl, line)
}
