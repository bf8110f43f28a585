package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

const (
	tailLines          = 12
	maxLine            = 16 << 10
	readerDrainTimeout = 2 * time.Second
	// stderrPipeSize is the capacity asked for virtiofsd's stderr pipe
	// (F_SETPIPE_SZ; 64 KiB by default, fs.pipe-max-size allows 1 MiB): a
	// burst of lines waits in the pipe while the shim's one thread is busy,
	// instead of blocking virtiofsd's write(2).
	stderrPipeSize = 1 << 20
	// termResend is how often SIGTERM is sent again while virtiofsd stops.
	// The C virtiofsd prints its readiness line just before it calls
	// accept(): a SIGTERM in between only sets its exit flag, and accept()
	// then blocks until SIGKILL. The next SIGTERM interrupts accept() and
	// it exits 1. Another SIGTERM is harmless in every other phase and to
	// the Rust one, whose first SIGTERM ends it.
	termResend = 250 * time.Millisecond
)

// Lines takes virtiofsd's lines; Offer must never block. r.Message is valid
// only during the call: the reader's buffer under it is reused, so that a
// line Offer refuses (a flood's) costs no copy; Offer copies what it keeps
// (strings.Clone).
type Lines interface {
	Offer(r logsink.Record) bool
}

// Supervisor runs one virtiofsd session on a socket systemd passed: it starts
// virtiofsd with the socket as fd 3, sends READY=1 when virtiofsd says it is
// waiting for a connection, forwards its lines, pets the watchdog, stops it
// when ctx is cancelled, and reaps it. The zero values of the optional fields
// are usable.
type Supervisor struct {
	Path   string   // the virtiofsd binary
	Args   []string // its arguments (see Args)
	Env    []string // its environment (see ChildEnv)
	Flavor virtiofsd.Flavor

	Socket     *os.File // the listening socket, passed as fd 3
	SocketPath string   // shown in STATUS=
	SharedDir  string   // shown in STATUS=

	Notifier Notifier           // nil: no notifications
	Lines    Lines              // nil: lines are only kept for error messages
	Log      logrus.FieldLogger // nil: the standard logger

	ReadyTimeout time.Duration // 0: config.DefaultReadyTimeout
	StopTimeout  time.Duration // grace between SIGTERM and SIGKILL; 0: config.DefaultStopTimeout
	Watchdog     time.Duration // WATCHDOG=1 period; 0: none

	// Session names the session in the journal (VIRTIOFSD_SESSION) and
	// the shim's log; "" for none.
	Session string
	// Standby is the session's number when the shim keeps a virtiofsd
	// waiting between sessions (STANDBY=yes), shown in STATUS=; 0 otherwise.
	// From the second session on, READY=1 is not sent again.
	Standby int
	// Release asks to give up the socket (its socket unit is stopping): a
	// virtiofsd with no client yet is stopped, a serving one goes on until
	// its client leaves. nil: never.
	Release <-chan struct{}
	// Publish is told each change the supervisor decides, in order: the
	// typed state is made of these, never of STATUS= text. nil: nobody.
	Publish func(Change)
	// ClientIsShim: virtiofsd's client is the shim's own connection (the
	// front, on a private socket), so its connection says nothing of the
	// VM, and the STATUS= that says a VM is served is the caller's to send.
	ClientIsShim bool
	// Ready, if set, is called once virtiofsd's readiness line was told
	// to systemd (READY=1 and its STATUS=, or the STATUS= alone for a
	// standby session after the first): a STATUS= the caller sends from
	// then on follows it. Not called for a virtiofsd that was not ready
	// in time.
	Ready func()
	// ClientConnected, with ClientIsShim, tells at the readiness line
	// whether the caller already accepted the VM: READY=1's STATUS= then
	// says it is served. nil: it says virtiofsd waits for one.
	ClientConnected func() bool
}

// Change is where a session is, as the supervisor has decided it.
type Change struct {
	PID int // virtiofsd's pid
	// Phase is how far virtiofsd's lines went: state.Starting (no
	// readiness line yet), state.Waiting (the readiness line: waiting for
	// the VM in accept()) or state.Serving (a client connected), in that
	// order.
	Phase state.Phase
	// Stopping: a stop began (systemd's, or a release's of a virtiofsd
	// with no client).
	Stopping bool
	// Released: Release was received; KeepsServing: and the session goes
	// on with its client (served or queued on the socket) until it leaves.
	Released     bool
	KeepsServing bool
}

// Outcome is how a session ended, besides its error.
type Outcome struct {
	Served   bool // a client connected
	Released bool // Release was received: no session may follow on this socket
}

// session is the state the stderr reader and the main loop share.
type session struct {
	s         *Supervisor
	pid       int
	readyCh   chan struct{}
	mu        sync.Mutex
	ready     bool // READY=1 was sent
	readyOver bool // timed out or stopping: no READY=1 from now on
	phase     state.Phase
	change    Change            // the last one published
	tail      [tailLines][]byte // the last lines, a ring; buffers reused
	tailNext  int               // where the next line goes
	tailLen   int
	// migration is virtiofsd's line saying a migration failed, and
	// whether it was an incoming one; "" when none did.
	migration         string
	migrationIncoming bool
}

// Run starts virtiofsd and returns when it has ended and been reaped.
// A nil error is a clean end: the client disconnected, or ctx was cancelled
// and virtiofsd stopped within the grace period. Otherwise the error is an
// *ExitError, *NotReadyError, *StopTimeoutError, *MigrationError (virtiofsd
// reported a failed live migration, though it exited 0), or one wrapping ErrBinary
// when virtiofsd could not be started at all.
func (s *Supervisor) Run(ctx context.Context) error {
	_, err := s.RunSession(ctx)
	return err
}

// RunSession is Run, and also tells whether a client was served and
// whether the socket was released. A virtiofsd stopped on Release while
// waiting ends with a nil error whatever its status.
func (s *Supervisor) RunSession(ctx context.Context) (Outcome, error) {
	var out Outcome
	err := s.run(ctx, &out)
	return out, err
}

func (s *Supervisor) run(ctx context.Context, out *Outcome) error {
	log := s.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	if err := closeOnExecAbove2(); err != nil {
		return fmt.Errorf("mark descriptors close-on-exec: %w", err)
	}
	pipe, err := newStderrPipe(stderrPipeSize)
	if err != nil {
		return fmt.Errorf("create virtiofsd's stderr pipe: %w", err)
	}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = pipe.w, pipe.w
	cmd.ExtraFiles = []*os.File{s.Socket}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	// Pdeathsig fires when the thread that forked dies, not the process
	// (golang/go#27505): fork from a locked thread that lives until Wait.
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait() // the status is read from cmd.ProcessState
		close(exited)
	}()
	err = <-started
	pipe.w.Close() // virtiofsd has its copy
	if err != nil {
		pipe.Close()
		return virtiofsd.BinaryErrorf("start %s: %v", s.Path, err)
	}

	ss := newSession(s, cmd.Process.Pid)
	ss.publish(func(c *Change) { c.PID = ss.pid })
	log = log.WithField("virtiofsd_pid", ss.pid)
	if s.Session != "" {
		log = log.WithField("session", s.Session)
	}
	log.WithFields(logrus.Fields{"argv": strings.Join(cmd.Args, " "), "flavor": s.Flavor.String()}).Info("started virtiofsd")
	readyTimeout := orDefault(s.ReadyTimeout, config.DefaultReadyTimeout)
	stopTimeout := orDefault(s.StopTimeout, config.DefaultStopTimeout)
	// EXTEND_TIMEOUT_USEC: systemd's TimeoutStartSec=/TimeoutStopSec= then
	// never cut short a READY_TIMEOUT or STOP_TIMEOUT longer than they are
	// (it only ever extends them).
	ss.notify(fmt.Sprintf("STATUS=Starting virtiofsd (pid %d) for %s\nEXTEND_TIMEOUT_USEC=%d",
		ss.pid, s.SharedDir, extendUsec(readyTimeout)))

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		ss.read(pipe)
	}()

	start := time.Now()
	readyTimer := time.NewTimer(readyTimeout)
	defer readyTimer.Stop()
	var watchdog <-chan time.Time
	if s.Watchdog > 0 {
		// Pet once now: sessions that follow one another (STANDBY=yes)
		// may each be shorter than the period, and the service's watchdog
		// runs across them.
		ss.notify("WATCHDOG=1")
		t := time.NewTicker(s.Watchdog)
		defer t.Stop()
		watchdog = t.C
	}
	var (
		done       = ctx.Done()
		release    = s.Release
		readyCh    = ss.readyCh
		readyFire  = readyTimer.C
		grace      <-chan time.Time
		resend     <-chan time.Time
		stopping   bool
		stopPhase  state.Phase // where virtiofsd was when the stop began
		timedOut   bool
		killedHard bool
	)
loop:
	for {
		select {
		case <-readyCh:
			readyCh, readyFire = nil, nil
			log.WithField("ready_after", time.Since(start).Round(time.Millisecond).String()).Info("virtiofsd is ready")
		case <-readyFire:
			readyFire = nil
			if !ss.endReadiness() {
				timedOut = true
				log.WithField("timeout", readyTimeout.String()).Error("virtiofsd not ready in time, killing it")
				_ = cmd.Process.Kill()
			}
		case <-release:
			release = nil
			out.Released = true
			if ss.currentPhase() == state.Serving || PendingClient(s.Socket) || heldClient(ss.pid, s.Socket) {
				// A client already queued on the socket is as good as
				// served: virtiofsd accepts it next. One it has accepted
				// is served, though its line saying so may still wait in
				// the pipe: the kernel is asked, not the lines.
				ss.publish(func(c *Change) { c.Released, c.KeepsServing = true, true })
				log.Info("the socket was stopped: this session goes on until the VM disconnects, and no session follows it")
				continue
			}
			if timedOut || stopping {
				ss.publish(func(c *Change) { c.Released = true })
				continue
			}
			ss.publish(func(c *Change) { c.Released, c.Stopping = true, true })
			log.Info("the socket was stopped: stopping the virtiofsd that waits on it, which has no client")
			stopping = true
			ss.endReadiness()
			ss.notify(fmt.Sprintf("STATUS=Releasing the socket: stopping virtiofsd (pid %d), which has no client\nEXTEND_TIMEOUT_USEC=%d",
				ss.pid, extendUsec(stopTimeout)))
			_ = cmd.Process.Signal(syscall.SIGTERM)
			grace = time.After(stopTimeout)
			t := time.NewTicker(termResend)
			defer t.Stop()
			resend = t.C
		case <-done:
			done = nil
			if timedOut {
				continue
			}
			if stopping { // already stopping on Release: now systemd wants it too
				ss.notify("STOPPING=1")
				continue
			}
			stopping = true
			ss.endReadiness()
			stopPhase = ss.currentPhase()
			ss.publish(func(c *Change) { c.Stopping = true })
			ss.notify(fmt.Sprintf("STOPPING=1\nSTATUS=Stopping virtiofsd (pid %d)\nEXTEND_TIMEOUT_USEC=%d",
				ss.pid, extendUsec(stopTimeout)))
			log.WithField("grace", stopTimeout.String()).Info("stopping virtiofsd with SIGTERM")
			_ = cmd.Process.Signal(syscall.SIGTERM)
			grace = time.After(stopTimeout)
			t := time.NewTicker(termResend)
			defer t.Stop()
			resend = t.C
		case <-resend:
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-grace:
			grace, resend = nil, nil
			killedHard = true
			log.WithField("grace", stopTimeout.String()).Warn("virtiofsd ignored SIGTERM, killing it")
			_ = cmd.Process.Kill()
		case <-watchdog:
			ss.notify("WATCHDOG=1")
		case <-exited:
			break loop
		}
	}

	// virtiofsd is reaped; its stderr ends with it, unless a process it
	// left behind holds the pipe: then stop reading after a bound.
	select {
	case <-readerDone:
	case <-time.After(readerDrainTimeout):
		pipe.Stop()
		<-readerDone
	}
	pipe.Close()

	status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return fmt.Errorf("read virtiofsd's exit status: unexpected %T", cmd.ProcessState.Sys())
	}
	log.WithField("status", cmd.ProcessState.String()).Info("virtiofsd ended")
	tail := ss.lastLines()
	out.Served = ss.currentPhase() == state.Serving
	switch {
	case stopping && !killedHard && out.Released && !out.Served:
		return nil // no client: whatever it exits with, nothing was lost
	case timedOut:
		return &NotReadyError{Timeout: readyTimeout, Tail: tail}
	case stopping && killedHard:
		return &StopTimeoutError{Grace: stopTimeout, Tail: tail}
	case stopping && s.Flavor.CleanStop(status, virtiofsd.Stop{Serving: stopPhase == state.Serving, Ready: ss.currentPhase() != state.Starting}),
		!stopping && s.Flavor.CleanExit(status):
		// virtiofsd ends well after a failed migration too (QEMU hangs
		// up): its own line is what tells.
		if m, incoming := ss.migrationFailure(); m != "" {
			return &MigrationError{Incoming: incoming, Line: m, Tail: tail}
		}
		return nil
	}
	return &ExitError{Status: status, Flavor: s.Flavor, BeforeReady: ss.currentPhase() == state.Starting,
		Stopped: stopping, StopPhase: stopPhase, Tail: tail}
}

// Reading a flood: a reader woken for every line costs the writer a
// context switch per line on a small machine. After readBurst reads in a
// row, each within readGap of the last, the reader pauses readPause and
// lets lines gather in the pipe (stderrPipeSize holds far more than a pause
// brings), then takes them in large reads. Lines that come one at a time,
// the readiness line among them, are read at once.
const (
	readGap   = time.Millisecond
	readBurst = 16
	readPause = 2 * time.Millisecond
)

// pacedReader reads from r, pausing during a flood (see readBurst).
type pacedReader struct {
	r     io.Reader
	now   func() time.Time
	sleep func(time.Duration)
	last  time.Time
	burst int
}

// Read measures from the start of one read to the start of the next: a
// read that waited for a line is no part of a flood.
func (p *pacedReader) Read(b []byte) (int, error) {
	now := p.now()
	if !p.last.IsZero() && now.Sub(p.last) < readGap {
		p.burst++
	} else {
		p.burst = 0
	}
	if p.burst >= readBurst {
		p.sleep(readPause)
		p.burst = 0
		now = p.now()
	}
	p.last = now
	return p.r.Read(b)
}

// PendingClient tells whether a client waits to be accepted on the
// listening socket (it polls readable), so that releasing the socket never
// drops a VM that connected a moment before.
func PendingClient(sock *os.File) bool {
	if sock == nil {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(sock.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}

// heldClient tells whether virtiofsd, pid or a process below it, holds a
// socket other than listener: a client it has accepted. Both flavors hold
// only the listening socket while they wait (the C one closes it once it
// has accepted). It answers false when it cannot look (no /proc, a process
// whose descriptors are not ours to read); PendingClient, asked first,
// covers the client until accept(2) takes it off the queue.
func heldClient(pid int, listener *os.File) bool {
	var st unix.Stat_t
	if pid <= 0 || listener == nil || unix.Fstat(int(listener.Fd()), &st) != nil {
		return false
	}
	own := fmt.Sprintf("socket:[%d]", st.Ino)
	for _, p := range proctree.Tree(pid) {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			l, err := os.Readlink(dir + "/" + e.Name())
			if err == nil && strings.HasPrefix(l, "socket:[") && l != own {
				return true
			}
		}
	}
	return false
}

// read takes virtiofsd's output line by line until EOF.
func (ss *session) read(r io.Reader) {
	br := bufio.NewReaderSize(&pacedReader{r: r, now: time.Now, sleep: time.Sleep}, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			// A view of the reader's buffer, valid until the next read:
			// what keeps the line copies it (tail, Lines.Offer).
			ss.line(unsafe.String(&b[0], len(b)))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (ss *session) line(raw string) {
	l := virtiofsd.Classify(ss.s.Flavor, raw)
	ss.mu.Lock()
	ss.tail[ss.tailNext] = append(ss.tail[ss.tailNext][:0], l.Message...)
	ss.tailNext = (ss.tailNext + 1) % tailLines
	if ss.tailLen < tailLines {
		ss.tailLen++
	}
	ss.mu.Unlock()

	// Each event counts only in the phase where it can happen, and where no
	// guest is connected yet: a guest's file names reach virtiofsd's lines
	// (debug output, quoted paths), and a name with a newline in it starts
	// a line the guest wrote, which may be exactly an event line
	// (virtiofsd.Classify). Before the connection virtiofsd prints nothing
	// of a guest's, so ready and connected are virtiofsd's own. A
	// disconnect line is only ever printed while serving, where it can be
	// forged: the session ends when virtiofsd exits, and the line changes
	// nothing.
	switch l.Event {
	case virtiofsd.Ready:
		if ss.enter(state.Starting, state.Waiting) {
			ss.markReady()
		}
	case virtiofsd.Connected:
		if ss.enter(state.Waiting, state.Serving) && !ss.s.ClientIsShim {
			ss.notify(ServingStatus(ss.s.SocketPath, ss.s.SharedDir, ss.pid))
		}
	case virtiofsd.MigrationLoadFailed, virtiofsd.MigrationSaveFailed:
		// Only a serving virtiofsd transfers state: the same text at
		// another time is not this event. Unlike ready and connected, a
		// guest can forge it: the Rust one's migration warnings print
		// file names as they are (find_paths: "Failed to discover entry
		// NAME ..."), and a name with a newline starts a line of the
		// guest's, during a migration, while serving.
		if ss.currentPhase() != state.Serving {
			break
		}
		incoming := l.Event == virtiofsd.MigrationLoadFailed
		ss.mu.Lock()
		ss.migration, ss.migrationIncoming = l.Message, incoming
		ss.mu.Unlock()
		if incoming {
			ss.notify(fmt.Sprintf("STATUS=Incoming migration failed: %s; the VM did not arrive on %s (virtiofsd pid %d)",
				l.Message, ss.s.SocketPath, ss.pid))
		} else {
			ss.notify(fmt.Sprintf("STATUS=Outgoing migration failed: %s; the VM stays with the source (virtiofsd pid %d)",
				l.Message, ss.pid))
		}
	}
	if ss.s.Lines != nil {
		ss.s.Lines.Offer(logsink.Record{Message: l.Message, Priority: l.Priority, PID: ss.pid, Session: ss.s.Session})
	}
}

// markReady sends READY=1 once, unless the session already timed out.
func (ss *session) markReady() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ready || ss.readyOver {
		return
	}
	ss.ready = true
	if ss.s.ClientConnected != nil && ss.s.ClientConnected() {
		// The client came before virtiofsd was ready: one message says
		// both, instead of a Waiting the caller would correct at once.
		msg := ServingStatus(ss.s.SocketPath, ss.s.SharedDir, ss.pid)
		if ss.s.Standby <= 1 {
			msg = "READY=1\n" + msg
		}
		ss.notifyLocked(msg)
	} else if ss.s.Standby > 0 {
		msg := fmt.Sprintf("STATUS=Waiting for a vhost-user client on %s, sharing %s (virtiofsd pid %d, standby for session %d)",
			ss.s.SocketPath, ss.s.SharedDir, ss.pid, ss.s.Standby)
		if ss.s.Standby == 1 {
			msg = "READY=1\n" + msg
		}
		ss.notifyLocked(msg)
	} else {
		ss.notifyLocked(fmt.Sprintf("READY=1\nSTATUS=Waiting for a vhost-user client on %s, sharing %s (virtiofsd pid %d)",
			ss.s.SocketPath, ss.s.SharedDir, ss.pid))
	}
	close(ss.readyCh)
	if ss.s.Ready != nil {
		ss.s.Ready()
	}
}

// ServingStatus is the STATUS= that says a VM is served on socket by
// virtiofsd pid: the supervisor's, and the front's (which accepts the VM
// itself), word for word.
func ServingStatus(socket, sharedDir string, pid int) string {
	return fmt.Sprintf("STATUS=Serving a vhost-user client on %s, sharing %s (virtiofsd pid %d)", socket, sharedDir, pid)
}

// endReadiness ends the time in which READY=1 may be sent (the ready
// timeout fired, or a stop began) and reports whether it was sent.
func (ss *session) endReadiness() (ready bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.readyOver = true
	return ss.ready
}

// newSession is the session of virtiofsd pid, starting.
func newSession(s *Supervisor, pid int) *session {
	return &session{s: s, pid: pid, readyCh: make(chan struct{}), phase: state.Starting, change: Change{Phase: state.Starting}}
}

// enter moves the session from phase from to phase to, and reports
// whether it was in from.
func (ss *session) enter(from, to state.Phase) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.phase != from {
		return false
	}
	ss.phase = to
	ss.publishLocked(func(c *Change) { c.Phase = to })
	return true
}

// publish applies a change to the session's last Change and tells
// Supervisor.Publish, serialised with the others (and with notify), so
// that changes arrive in the order they were decided.
func (ss *session) publish(change func(*Change)) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.publishLocked(change)
}

func (ss *session) publishLocked(change func(*Change)) {
	change(&ss.change)
	if ss.s.Publish != nil {
		ss.s.Publish(ss.change)
	}
}

func (ss *session) migrationFailure() (line string, incoming bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.migration, ss.migrationIncoming
}

func (ss *session) currentPhase() state.Phase {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.phase
}

func (ss *session) lastLines() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]string, 0, ss.tailLen)
	for i := 0; i < ss.tailLen; i++ {
		out = append(out, string(ss.tail[(ss.tailNext-ss.tailLen+i+tailLines)%tailLines]))
	}
	return out
}

// notify sends a state, serialised with the others so that READY=1,
// STATUS=, STOPPING=1 and WATCHDOG=1 reach systemd in the order they happen.
func (ss *session) notify(msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.notifyLocked(msg)
}

func (ss *session) notifyLocked(msg string) {
	if ss.s.Notifier == nil {
		return
	}
	if err := ss.s.Notifier.Notify(msg); err != nil && ss.s.Log != nil {
		ss.s.Log.WithError(err).Warn("sd_notify failed")
	}
}

// extendUsec is the time systemd should allow for a phase the shim bounds
// by d itself: d, plus room for the shim to kill, reap and report.
func extendUsec(d time.Duration) int64 {
	return (d + 5*time.Second).Microseconds()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
