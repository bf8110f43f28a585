package launch

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// notifySocket pretends to be systemd's NOTIFY_SOCKET (vhostuser.NotifySocket).
type notifySocket struct {
	ch <-chan vhostuser.Datagram
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	n, err := vhostuser.ListenNotify(filepath.Join(dir, "notify"))
	require.NoError(t, err)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	t.Cleanup(func() { n.Close() })
	return &notifySocket{ch: n.C}
}

// next returns the next datagram that is not WATCHDOG=1 (unless asked for).
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	for {
		select {
		case d, ok := <-n.ch:
			require.True(t, ok, "notify socket closed")
			if d.State == "WATCHDOG=1" {
				continue
			}
			return d.State
		case <-time.After(10 * time.Second):
			t.Fatal("no datagram on NOTIFY_SOCKET within 10s")
		}
	}
}

// none asserts that no datagram but WATCHDOG=1 is waiting.
func (n *notifySocket) none(t *testing.T) {
	t.Helper()
	for {
		select {
		case d := <-n.ch:
			if d.State != "WATCHDOG=1" {
				t.Fatalf("unexpected datagram %q", d.State)
			}
		default:
			return
		}
	}
}

// recorder is a Lines that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []logsink.Record
}

func (r *recorder) Offer(rec logsink.Record) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec.Message = strings.Clone(rec.Message) // Lines' contract: the buffer is reused
	r.records = append(r.records, rec)
	return true
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		out = append(out, rec.Message)
	}
	return out
}

func (r *recorder) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.records) == 0 {
		return 0
	}
	return r.records[0].PID
}

// scenario is one supervised fake virtiofsd on a fresh listening socket.
type scenario struct {
	sv     *Supervisor
	notify *notifySocket
	lines  *recorder
	sock   string
	cancel context.CancelFunc
	result chan error
}

func start(t *testing.T, flavor virtiofsd.Flavor, mode string, extraEnv ...string) *scenario {
	t.Helper()
	dir := testdir.Short(t)
	n := newNotifySocket(t, dir)
	sockPath := filepath.Join(dir, "vm.sock")
	f, err := vhostuser.Listen(sockPath)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })

	env := virtiofsd.ChildEnv(os.Environ(), flavor)
	env = append(env, fakevirtiofsd.Env(flavor.String(), mode)...)
	env = append(env, extraEnv...)
	args, err := virtiofsd.Args(flavor, virtiofsd.Options{SharedDir: dir})
	require.NoError(t, err)
	s := &scenario{notify: n, lines: &recorder{}, sock: sockPath, result: make(chan error, 1)}
	s.sv = &Supervisor{
		Path: os.Args[0], Args: args, Env: env, Flavor: flavor,
		Socket: f, SocketPath: sockPath, SharedDir: dir,
		Notifier: SystemdNotifier{}, Lines: s.lines,
		ReadyTimeout: 5 * time.Second, StopTimeout: 5 * time.Second,
	}
	return s
}

func (s *scenario) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(cancel)
	go func() { s.result <- s.sv.Run(ctx) }()
}

func (s *scenario) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.result:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s")
		return nil
	}
}

// probe connects like QEMU and asks for the features; it returns the open
// connection.
func probe(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := vhostuser.Probe(path, 10*time.Second)
	require.NoError(t, err, "a GET_FEATURES reply")
	return c
}

func gone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

func eachFlavor(t *testing.T, f func(t *testing.T, fl virtiofsd.Flavor)) {
	for _, fl := range []virtiofsd.Flavor{virtiofsd.C, virtiofsd.Rust} {
		t.Run(fl.String(), func(t *testing.T) { f(t, fl) })
	}
}

func TestReadyOnlyAfterReadinessLineThenCleanEndWhenVMDisconnects(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.Ready)
		s.run(t)
		starting := s.notify.next(t)
		assert.True(t, strings.HasPrefix(starting, "STATUS=Starting virtiofsd (pid "))
		assert.True(t, strings.HasSuffix(starting, "\nEXTEND_TIMEOUT_USEC=10000000"), "READY_TIMEOUT 5 s + 5 s: %q", starting)
		ready := s.notify.next(t)
		assert.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=Waiting for a vhost-user client on "+s.sock), ready)
		// READY=1 goes out first (readiness latency), the line to the journal right after.
		readyLine := map[virtiofsd.Flavor]string{
			virtiofsd.C:    "virtio_session_mount: Waiting for vhost-user socket connection...",
			virtiofsd.Rust: "Waiting for vhost-user socket connection...",
		}[fl]
		assert.Eventually(t, func() bool { return slices.Contains(s.lines.messages(), readyLine) },
			10*time.Second, time.Millisecond, "the readiness line is forwarded too")

		c := probe(t, s.sock)
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Serving a vhost-user client on "+s.sock))
		c.Close()
		require.NoError(t, s.wait(t), "virtiofsd ending after the VM hung up is a clean end")
		assert.True(t, gone(s.lines.pid()), "virtiofsd reaped")
	})
}

// TestReadyIsCalledOnceAfterSystemdWasTold: the front accepts the VM
// before virtiofsd is ready and says it is served once virtiofsd is; its
// STATUS= must follow READY=1's, so Ready comes after READY=1 went out.
// A virtiofsd never ready never calls it.
func TestReadyIsCalledOnceAfterSystemdWasTold(t *testing.T) {
	s := start(t, virtiofsd.Rust, fakevirtiofsd.Ready)
	var (
		mu    sync.Mutex
		order []string // what systemd was told, and Ready, in order
	)
	s.sv.Notifier = notifierFunc(func(msg string) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, strings.SplitN(msg, "\n", 2)[0])
		return nil
	})
	called := make(chan struct{})
	var once sync.Once
	s.sv.Ready = func() {
		mu.Lock()
		order = append(order, "Ready()")
		mu.Unlock()
		once.Do(func() { close(called) })
	}
	s.run(t)
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("Ready was not called within 10s")
	}
	c := probe(t, s.sock)
	c.Close()
	require.NoError(t, s.wait(t))
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	i := slices.Index(got, "READY=1")
	require.GreaterOrEqual(t, i, 0, "READY=1 sent: %q", got)
	require.Less(t, i+1, len(got), "%q", got)
	assert.Equal(t, "Ready()", got[i+1], "Ready right after READY=1: %q", got)
	n := 0
	for _, x := range got {
		if x == "Ready()" {
			n++
		}
	}
	assert.Equal(t, 1, n, "Ready called once: %q", got)

	never := start(t, virtiofsd.Rust, fakevirtiofsd.NeverReady)
	never.sv.ReadyTimeout = time.Second
	never.sv.Ready = func() { t.Error("Ready called for a virtiofsd never ready") }
	never.run(t)
	var nr *NotReadyError
	require.ErrorAs(t, never.wait(t), &nr)
}

// TestReadySaysServedWhenTheShimAcceptedTheVMFirst: the front accepts the
// VM before virtiofsd is ready; READY=1 then says it is served, in one
// message, and virtiofsd's own connection (the shim's) sends no STATUS=.
func TestReadySaysServedWhenTheShimAcceptedTheVMFirst(t *testing.T) {
	for _, standby := range []int{0, 1, 2} {
		s := start(t, virtiofsd.Rust, fakevirtiofsd.Ready)
		s.sv.ClientIsShim, s.sv.Standby = true, standby
		s.sv.ClientConnected = func() bool { return true }
		s.run(t)
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Starting"))
		want := "STATUS=Serving a vhost-user client on " + s.sock
		if standby <= 1 {
			want = "READY=1\n" + want
		}
		assert.True(t, strings.HasPrefix(s.notify.next(t), want), "standby %d", standby)
		c := probe(t, s.sock)
		c.Close()
		require.NoError(t, s.wait(t))
		s.notify.none(t)
	}
}

// notifierFunc is a Notifier of a function.
type notifierFunc func(string) error

func (f notifierFunc) Notify(s string) error { return f(s) }

// TestGuestFileNamesThatReadLikeEventsChangeNothing: while it serves,
// virtiofsd prints the names a guest looks up, and a name with a newline
// starts a line that reads exactly like an event line. None of them sends
// READY=1 or a STATUS= again, or ends the session: it ends cleanly when
// the VM hangs up, as it would without those files.
func TestGuestFileNamesThatReadLikeEventsChangeNothing(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.Hostile)
		s.run(t)
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Starting virtiofsd (pid "))
		assert.True(t, strings.HasPrefix(s.notify.next(t), "READY=1\nSTATUS=Waiting for a vhost-user client on "+s.sock))
		c := probe(t, s.sock)
		defer c.Close()
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Serving a vhost-user client on "+s.sock))
		assert.Eventually(t, func() bool { return slices.Contains(s.lines.messages(), fakevirtiofsd.HostileDone) },
			10*time.Second, 10*time.Millisecond, "the fake prints the hostile lines")
		// A forged line reaches the journal as an event's message: whole
		// for C; for Rust without its prefix, so its hang-up text (the
		// real hang-up comes only once the VM has gone, below).
		forged := 0
		for _, m := range s.lines.messages() {
			if virtiofsd.Classify(fl, m).Event != virtiofsd.NoEvent || (fl == virtiofsd.Rust && m == "Client disconnected, shutting down") {
				forged++
			}
		}
		assert.Positive(t, forged, "some lines the guest wrote read exactly as events")
		s.notify.none(t)

		c.Close()
		require.NoError(t, s.wait(t), "virtiofsd ending after the VM hung up is a clean end")
		s.notify.none(t)
	})
}

// TestEventsCountOnlyInTheirPhase: a connection line before the readiness
// line, and a second readiness line, are not taken (virtiofsd prints them
// once, in that order).
func TestEventsCountOnlyInTheirPhase(t *testing.T) {
	ss := newSession(&Supervisor{Flavor: virtiofsd.C}, 0)
	ss.line("virtio_session_mount: Received vhost-user socket connection\n")
	assert.Equal(t, state.Starting, ss.currentPhase(), "connected before ready")
	ss.line("virtio_loop: Unexpected poll revents 11\n")
	assert.Equal(t, state.Starting, ss.currentPhase(), "disconnected before ready")
	ss.line("virtio_session_mount: Waiting for vhost-user socket connection...\n")
	assert.Equal(t, state.Waiting, ss.currentPhase())
	ss.line("virtio_session_mount: Received vhost-user socket connection\n")
	assert.Equal(t, state.Serving, ss.currentPhase())
	ss.line("virtio_session_mount: Waiting for vhost-user socket connection...\n")
	ss.line("virtio_loop: Unexpected poll revents 11\n")
	assert.Equal(t, state.Serving, ss.currentPhase(), "only virtiofsd's exit ends a session")
}

func TestExitsWhenVirtiofsdNeverReady(t *testing.T) {
	s := start(t, virtiofsd.Rust, fakevirtiofsd.NeverReady)
	s.sv.ReadyTimeout = time.Second // room for the fake to start and say its line under a loaded -race run
	s.run(t)
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Starting"))
	err := s.wait(t)
	var nr *NotReadyError
	require.ErrorAs(t, err, &nr)
	assert.Contains(t, err.Error(), "setting up, and never getting there", "the error carries virtiofsd's last lines")
	s.notify.none(t)
	assert.True(t, gone(s.lines.pid()), "the unready virtiofsd was killed and reaped")
}

func TestExitsWithVirtiofsdStatusWhenItFailsBeforeReady(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.CrashBeforeReady)
		s.run(t)
		err := s.wait(t)
		var ee *ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, 1, ee.ExitCode())
		assert.True(t, ee.BeforeReady)
		assert.Contains(t, err.Error(), "exited with status 1 before it was ready; its last lines:")
		assert.Contains(t, err.Error(), map[virtiofsd.Flavor]string{virtiofsd.C: "failed to stat source", virtiofsd.Rust: "Error entering sandbox"}[fl])
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Starting"))
		s.notify.none(t)
	})
}

func TestExitsWith128PlusSignalWhenVirtiofsdCrashesAfterReady(t *testing.T) {
	// C: killed itself; Rust: its sandboxed child was, and it exits 256-9.
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.CrashAfterReady)
		s.run(t)
		err := s.wait(t)
		var ee *ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, 128+9, ee.ExitCode())
		assert.False(t, ee.BeforeReady)
		assert.Contains(t, err.Error(), "killed by signal 9 (killed)")
	})
}

func TestStopSendsStoppingAndEndsCleanlyInEveryPhase(t *testing.T) {
	for _, phase := range []state.Phase{state.Starting, state.Waiting, state.Serving} {
		t.Run(string(phase), func(t *testing.T) {
			eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
				mode := fakevirtiofsd.Ready
				if phase == state.Starting {
					mode = fakevirtiofsd.SlowStart
				}
				s := start(t, fl, mode)
				var published changes
				s.sv.Publish = published.add
				s.run(t)
				starting := s.notify.next(t)
				require.True(t, strings.HasPrefix(starting, "STATUS=Starting "), starting)
				pid := published.list()[0].PID // published before the status
				if phase != state.Starting {
					assert.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
				}
				if phase == state.Serving {
					c := probe(t, s.sock)
					defer c.Close()
					s.notify.next(t) // Serving
				}
				s.cancel() // what SIGTERM from systemd does
				stopping := s.notify.next(t)
				assert.True(t, strings.HasPrefix(stopping, "STOPPING=1\nSTATUS=Stopping virtiofsd"))
				assert.True(t, strings.HasSuffix(stopping, "\nEXTEND_TIMEOUT_USEC=10000000"),
					"systemd is told to allow the 5 s grace and room to reap: %q", stopping)
				require.NoError(t, s.wait(t), "exit after our SIGTERM is clean (C's 1 in accept() and Rust's _exit(1) too)")
				assert.True(t, gone(pid))
			})
		})
	}
}

func TestStopSendsSIGTERMAgainWhenTheFirstIsLost(t *testing.T) {
	// The real C virtiofsd loses a SIGTERM that arrives between its
	// readiness line and its accept(); the shim's next one ends it.
	s := start(t, virtiofsd.C, fakevirtiofsd.LateAccept)
	s.run(t)
	s.notify.next(t)
	require.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
	s.cancel()
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STOPPING=1"))
	require.NoError(t, s.wait(t), "ended by the second SIGTERM, within the grace period: a clean stop")
	assert.Contains(t, s.lines.messages(), "vhost socket accept: Interrupted system call")
}

func TestStopKillsVirtiofsdThatIgnoresSIGTERM(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.IgnoreSIGTERM)
	s.sv.StopTimeout = 200 * time.Millisecond
	s.run(t)
	s.notify.next(t)
	require.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
	s.cancel()
	assert.True(t, strings.HasPrefix(s.notify.next(t), "STOPPING=1"))
	err := s.wait(t)
	var st *StopTimeoutError
	require.ErrorAs(t, err, &st)
	assert.Equal(t, 137, st.ExitCode())
	assert.True(t, gone(s.lines.pid()))
}

func TestWatchdogIsPettedWhileVirtiofsdLives(t *testing.T) {
	s := start(t, virtiofsd.Rust, fakevirtiofsd.Ready)
	s.sv.Watchdog = 20 * time.Millisecond
	s.run(t)
	pets := 0
	deadline := time.After(10 * time.Second)
	for pets < 3 {
		select {
		case d := <-s.notify.ch:
			if d.State == "WATCHDOG=1" {
				pets++
			}
		case <-deadline:
			t.Fatalf("only %d WATCHDOG=1 within 10s", pets)
		}
	}
	s.cancel()
	require.NoError(t, s.wait(t))
}

// slowSink is a journal that takes its time over each line.
type slowSink struct {
	mu      sync.Mutex
	records []logsink.Record
	fields  []map[string]string
}

func (s *slowSink) Write(r logsink.Record, f map[string]string) error {
	time.Sleep(50 * time.Microsecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, r)
	s.fields = append(s.fields, f)
	return nil
}

func TestFloodIsNeverBlockedBySlowJournalAndDropsAreCounted(t *testing.T) {
	const lines = 50000
	// C: its lines do not depend on the host (the Rust one's RLIMIT_NOFILE warning does).
	s := start(t, virtiofsd.C, fakevirtiofsd.Flood, fakevirtiofsd.FloodEnv(lines))
	sink := &slowSink{}
	fwd := logsink.NewForwarder(sink, logsink.Limits{Queue: 64}, nil)
	s.sv.Lines = fwd
	s.run(t)
	s.notify.next(t)
	require.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
	c := probe(t, s.sock) // accepted only after all flood lines were written
	c.Close()
	require.NoError(t, s.wait(t))
	forwarded, dropped, _ := fwd.Close()
	assert.Greater(t, dropped, uint64(0), "a journal this slow cannot take %d lines", lines)
	// ready + flood + received + entry + hang-up + exit
	assert.Equal(t, uint64(1+lines+4), forwarded+dropped, "every line is either forwarded or counted as dropped")

	var warned uint64
	for i, r := range sink.records {
		if n := sink.fields[i][logsink.FieldDropped]; n != "" {
			assert.Contains(t, r.Message, "dropped "+n+" line(s) of virtiofsd output")
			var k uint64
			for _, ch := range n {
				k = k*10 + uint64(ch-'0')
			}
			warned += k
		}
	}
	assert.Equal(t, dropped, warned, "the warnings add up to the lines dropped")
}

// countingLines counts the lines offered to next.
type countingLines struct {
	next Lines
	n    uint64
}

func (c *countingLines) Offer(r logsink.Record) bool { c.n++; return c.next.Offer(r) }

// TestFloodBeyondTheJournalsRateLimitIsCountedExactlyAndSaidOnce: the lines
// journald would discard are not sent; the count is exact and one notice,
// worded as journald words it, says it.
func TestFloodBeyondTheJournalsRateLimitIsCountedExactlyAndSaidOnce(t *testing.T) {
	const lines, burst = 20000, 1000
	s := start(t, virtiofsd.Rust, fakevirtiofsd.Flood, fakevirtiofsd.FloodEnv(lines))
	sink := &slowSink{}
	fwd := logsink.NewForwarder(sink, logsink.Limits{Interval: time.Hour, Burst: burst}, nil)
	offered := &countingLines{next: fwd}
	s.sv.Lines = offered
	s.run(t)
	s.notify.next(t)
	require.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
	c := probe(t, s.sock)
	c.Close()
	require.NoError(t, s.wait(t))
	forwarded, dropped, suppressed := fwd.Close()
	assert.Zero(t, dropped, "the queue holds a burst")
	assert.Equal(t, offered.n, forwarded+suppressed, "every line is either forwarded or counted")
	assert.Greater(t, offered.n, uint64(lines))
	assert.Greater(t, suppressed, uint64(lines-2*burst))

	var notices []string
	for i, r := range sink.records {
		if n := sink.fields[i][logsink.FieldSuppressed]; n != "" {
			notices = append(notices, n)
			assert.Equal(t, "Suppressed "+n+" messages from virtiofsd (the journal's rate limit, applied by virtiofsd-shim)", r.Message)
		}
	}
	assert.Equal(t, []string{strconv.FormatUint(suppressed, 10)}, notices, "said once, exactly")
}

func TestStartFailureIsABinaryError(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.Ready)
	s.sv.Path = "/nonexistent/virtiofsd"
	s.run(t)
	err := s.wait(t)
	assert.True(t, errors.Is(err, virtiofsd.ErrBinary), "%v", err)
}

// TestStderrPipeHoldsABurst: virtiofsd's stderr pipe is grown so that a
// burst of lines waits in it instead of blocking virtiofsd.
func TestStderrPipeHoldsABurst(t *testing.T) {
	p, err := newStderrPipe(stderrPipeSize)
	require.NoError(t, err)
	defer p.Close()
	size, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETPIPE_SZ, 0)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, size, stderrPipeSize)
}

// TestStderrPipeReadsUntilEveryWriterCloses: lines come through, then EOF
// once the last writer is gone.
func TestStderrPipeReadsUntilEveryWriterCloses(t *testing.T) {
	p, err := newStderrPipe(stderrPipeSize)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.w.WriteString("virtio_session_mount: Waiting for vhost-user socket connection...\n")
	require.NoError(t, err)
	p.w.Close()
	b, err := io.ReadAll(p)
	require.NoError(t, err)
	assert.Equal(t, "virtio_session_mount: Waiting for vhost-user socket connection...\n", string(b))
}

// TestStderrPipeStopEndsAReadAProcessLeftBehindHolds: a process virtiofsd
// left behind keeps the pipe open and quiet; Stop ends the blocked read.
func TestStderrPipeStopEndsAReadAProcessLeftBehindHolds(t *testing.T) {
	p, err := newStderrPipe(stderrPipeSize)
	require.NoError(t, err)
	defer p.Close() // p.w stays open: the process left behind
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(p)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read block in the kernel
	p.Stop()
	select {
	case err := <-got:
		assert.ErrorIs(t, err, os.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not end the blocked read")
	}
}

// TestReaderPausesOnlyDuringAFlood: reads that come one at a time are never
// delayed; a run of back-to-back reads is paused, so lines gather in the
// pipe and the next read takes many at once.
func TestReaderPausesOnlyDuringAFlood(t *testing.T) {
	now := time.Unix(0, 0)
	var slept []time.Duration
	p := &pacedReader{r: strings.NewReader(strings.Repeat("x", 1000)), now: func() time.Time { return now },
		sleep: func(d time.Duration) { slept = append(slept, d); now = now.Add(d) }}
	buf := make([]byte, 1)
	for i := 0; i < 10; i++ { // a line every 10 ms
		_, err := p.Read(buf)
		require.NoError(t, err)
		now = now.Add(10 * time.Millisecond)
	}
	assert.Empty(t, slept)
	for i := 0; i < 2*readBurst+1; i++ { // a flood
		_, err := p.Read(buf)
		require.NoError(t, err)
		now = now.Add(10 * time.Microsecond)
	}
	assert.Equal(t, []time.Duration{readPause, readPause}, slept)
}

func TestExitErrorSaysWhenAStopDoesNotExplainIt(t *testing.T) {
	err := &ExitError{Status: syscall.WaitStatus(1 << 8), Flavor: virtiofsd.C, Stopped: true, StopPhase: state.Serving,
		Tail: []string{"virtio_loop: Exit"}}
	assert.Equal(t, "virtiofsd exited with status 1, which a SIGTERM while serving does not explain; its last lines:\n  virtio_loop: Exit",
		err.Error())
	assert.Equal(t, 1, err.ExitCode())
}
