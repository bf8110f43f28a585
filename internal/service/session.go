package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// VMProtocolError is a session ended because the VM sent a vhost-user
// message the front could not parse or that broke a rule.
type VMProtocolError struct{ Err error }

func (e *VMProtocolError) Error() string {
	return fmt.Sprintf("the VM sent a malformed vhost-user message, so its session was ended: %v", e.Err)
}

func (e *VMProtocolError) Unwrap() error { return e.Err }

// ExitCode is the shim's exit status for a malformed message from the VM.
func (e *VMProtocolError) ExitCode() int { return exitcode.VMProtocol }

// Session is one VM's session with the shim as the VM's end of the
// socket (the front): it owns the VM's connection, the front.Front that
// relays it, and the virtiofsd processes (each under its own
// launch.Supervisor) that serve it one after another. Run drives it;
// Reload swaps virtiofsd under it, from Run's own loop.
type Session struct {
	// ID names the session (VIRTIOFSD_SESSION); Number counts the run's
	// sessions (the standby number when Standby).
	ID      string
	Number  int
	Standby bool
	// Sock is systemd's listening socket, where the VM connects.
	Sock *activation.Socket
	// Plan is how the current virtiofsd was started; Reload replaces it.
	Plan *plan.Plan
	// Instance provides the sinks, notifier, state and config loader.
	Instance *Instance
	// Lines receives every virtiofsd's lines.
	Lines launch.Lines
	// Release is the socket's release (see launch.Supervisor.Release).
	Release <-chan struct{}
	// Reloads are reload requests; each is answered in the state.
	Reloads <-chan struct{}
	// Log is the shim's log.
	Log *logrus.Entry
	// Watchdog is the WATCHDOG=1 period of the current virtiofsd's
	// supervisor; 0: none.
	Watchdog time.Duration
	// Checkpoint is the session the last shim kept across a restart, to
	// resume on the first virtiofsd instead of accepting a VM; Run owns it.
	Checkpoint *front.Checkpoint
	// Crashed is the session a killed shim left in systemd's store, to
	// resume (degraded) on the first virtiofsd; Run owns it.
	Crashed *front.CrashRecord

	front     *front.Front
	connected atomic.Bool // the VM is accepted (read by supervisors' Publish)
	cur       *backend
	retired   []*backend
	handover  int
	// resumed: the session was resumed after a restart, so its inodes
	// the restart could not carry are failed in the guest, and each later
	// virtiofsd carries them so (plan.ForResume) instead of refusing.
	resumed bool
	// Crash recovery (crash.go): the front's calls for a fresh virtiofsd,
	// the crashes in the bound's window, the recoveries, and how the last
	// crashed virtiofsd ended.
	respawns   chan respawnRequest
	crashCount crashes
	recoveries int
	lastEnd    string
	freshPID   atomic.Int64 // the fresh virtiofsd's pid, for recovered
	// toldNotReady: the journal said the VM lost its connection to a
	// virtiofsd that failed before it was ready (notReady).
	toldNotReady bool
	// mov is what the state says of whether a restart or reload would
	// move the session.
	mov movability
}

// movability is whether a restart or reload would move the session now,
// the VM kept: the plan's verdict (the front on, no thread pool) and the
// front's (what the VM negotiated: state transfer, no unknown request, no
// packed ring, no live migration), each "" when it allows it, or why not.
// The front's verdict comes from its own goroutine.
type movability struct {
	mu          sync.Mutex
	plan, front string
}

// setMovable changes the verdicts and publishes the state's movable
// record: the plan's reason first, then the front's.
func (s *Session) setMovable(change func(m *movability)) {
	s.mov.mu.Lock()
	defer s.mov.mu.Unlock()
	change(&s.mov)
	why := s.mov.plan
	if why == "" {
		why = s.mov.front
	}
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) { st.Movable, st.UnmovableReason = why == "", why })
	}
}

// planMovable publishes the verdict of the plan the session runs.
func (s *Session) planMovable(p *plan.Plan) {
	_, why := plan.LiveSwap(p)
	s.setMovable(func(m *movability) { m.plan = why })
}

// frontSwappable is the front's Config.Swappable.
func (s *Session) frontSwappable(_ bool, reason string) {
	s.setMovable(func(m *movability) { m.front = reason })
}

// publishBinary publishes b's program as the session's virtiofsd, once b
// serves it.
func (s *Session) publishBinary(b *backend) {
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) { st.Virtiofsd = b.binary })
	}
}

// backend is one virtiofsd serving (or about to serve) the session: the
// shim's end of its private socket, and its supervisor.
type backend struct {
	private *privateSocket
	conn    *net.UnixConn // nil until connected
	sock    *os.File      // the listening socket it got as fd 3
	cancel  context.CancelFunc
	done    chan error // its supervisor's error, once
	outcome launch.Outcome
	ready   chan struct{} // closed at its readiness line
	started chan struct{} // closed once its process runs
	// saidServing: its READY=1 said the VM is served (it was accepted
	// before virtiofsd was ready).
	saidServing atomic.Bool
	pid         atomic.Int64
	version     string
	binary      *state.Binary // its program as started, nil if unknown
	// quiet: its supervisor tells systemd and the state nothing (a
	// candidate before the swap, or one swapped out).
	quiet atomic.Bool
	// crashed: it ended under the connected VM; done holds its error
	// again, for ended (Run's loop only).
	crashed bool
}

// speak makes b the backend whose supervisor tells systemd, and pets the
// watchdog at once: b's own WATCHDOG=1 ticker began while it was quiet, so
// reloads closer together than its period would otherwise let systemd's
// watchdog expire (SIGABRT, found by the reload soak).
func (s *Session) speak(b *backend) {
	b.quiet.Store(false)
	if s.Watchdog > 0 && s.Instance != nil && s.Instance.Notifier != nil {
		_ = s.Instance.Notifier.Notify("WATCHDOG=1")
	}
}

// quietNotifier passes a supervisor's notifications on unless its
// backend is quiet.
type quietNotifier struct {
	n launch.Notifier
	b *backend
}

func (q quietNotifier) Notify(s string) error {
	if q.n == nil || q.b.quiet.Load() {
		return nil
	}
	return q.n.Notify(s)
}

// privateSocket is a listening unix socket only the shim connects to:
// bound in a fresh 0700 folder, which connect removes once the shim is
// connected (nobody can connect after that). Until then only the folder's
// owner can reach it.
type privateSocket struct {
	file *os.File // the listener, for virtiofsd's --fd
	dir  string
	addr *net.UnixAddr
}

func newPrivateSocket() (*privateSocket, error) {
	dir, err := os.MkdirTemp(os.Getenv("RUNTIME_DIRECTORY"), "front-")
	if err != nil {
		dir, err = os.MkdirTemp("", "virtiofsd-front-")
	}
	if err != nil {
		return nil, fmt.Errorf("create the folder of virtiofsd's private socket: %w", err)
	}
	addr := &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("listen on virtiofsd's private socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pass virtiofsd's private socket: %w", err)
	}
	return &privateSocket{file: f, dir: dir, addr: addr}, nil
}

// connect connects the shim to the socket (queued until virtiofsd
// accepts) and removes it, so that nobody else ever can.
func (p *privateSocket) connect() (*net.UnixConn, error) {
	defer p.remove()
	c, err := net.DialUnix("unix", nil, p.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to virtiofsd's private socket: %w", err)
	}
	return c, nil
}

func (p *privateSocket) remove() { _ = os.RemoveAll(p.dir) }

// start starts a virtiofsd of plan p on a private socket; quiet says
// whether its supervisor stays silent to systemd and the state; connect,
// whether the shim connects to it now, before it starts (a reload's
// candidate for a connected VM). Otherwise Run connects once the VM has,
// so that virtiofsd's "Client connected" line still means the VM.
func (s *Session) start(ctx context.Context, p *plan.Plan, quiet, connect bool) (*backend, error) {
	ps, err := newPrivateSocket()
	if err != nil {
		return nil, err
	}
	f := ps.file
	b := &backend{private: ps, sock: f, done: make(chan error, 1), ready: make(chan struct{}), started: make(chan struct{}),
		version: p.Version.Number, binary: binaryOf(p)}
	if connect {
		if b.conn, err = ps.connect(); err != nil {
			f.Close()
			return nil, err
		}
	}
	b.quiet.Store(quiet)
	in := s.Instance
	sv := &launch.Supervisor{
		Path:         p.Binary,
		Args:         p.Args,
		Env:          virtiofsd.ChildEnv(os.Environ(), p.Version.Flavor),
		Flavor:       p.Version.Flavor,
		Socket:       f,
		SocketPath:   s.Sock.String(),
		SharedDir:    p.Config.SharedDir,
		Notifier:     quietNotifier{in.Notifier, b},
		Lines:        s.Lines,
		Log:          s.Log,
		ReadyTimeout: p.ReadyTimeout,
		StopTimeout:  p.StopTimeout,
		Session:      s.ID,
		Watchdog:     s.Watchdog,
		ClientIsShim: true,
	}
	if s.Standby {
		sv.Standby = s.Number
	}
	// b is ready once systemd was told so: a STATUS= of the session's
	// own (the VM served) follows READY=1's.
	sv.Ready = func() { close(b.ready) }
	sv.ClientConnected = func() bool {
		if s.connected.Load() {
			b.saidServing.Store(true)
			return true
		}
		return false
	}
	var startedOnce sync.Once
	sv.Publish = func(c launch.Change) {
		b.pid.Store(int64(c.PID))
		if c.PID != 0 {
			startedOnce.Do(func() { close(b.started) })
		}
		if b.quiet.Load() || in.State == nil {
			return
		}
		// virtiofsd's own client is the shim: the VM is served when the
		// shim has accepted it.
		connected := s.connected.Load()
		if c.Phase == state.Serving && !connected {
			c.Phase = state.Waiting
		}
		if c.Phase == state.Waiting && connected {
			c.Phase = state.Serving
		}
		publish(in.State, c)
	}
	// Not cancelled with ctx (the shim's SIGTERM): a restart saves the
	// session from this virtiofsd first (see keepForRestart).
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel
	go func() {
		out, err := sv.RunSession(sctx)
		b.outcome = out
		f.Close()
		ps.remove()
		b.done <- err
	}()
	return b, nil
}

// waitStarted waits until b's process runs, and tells whether it does (or
// ended already). With GOMAXPROCS=1 (the unit's), the VM's accept and the
// front's start would otherwise run before virtiofsd is even forked, and
// delay its readiness by as much.
func (b *backend) waitStarted() bool {
	select {
	case <-b.started:
		return true
	case err := <-b.done:
		b.done <- err
		return false
	}
}

// isReady tells whether b's readiness line was told to systemd.
func (b *backend) isReady() bool {
	select {
	case <-b.ready:
		return true
	default:
		return false
	}
}

// waitReady waits for b's readiness line: nil, or the error it ended with.
func (b *backend) waitReady(ctx context.Context) error {
	select {
	case <-b.ready:
		return nil
	case err := <-b.done:
		b.done <- err
		if err == nil {
			err = errors.New("virtiofsd ended before it was ready")
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop stops b and waits for its end.
func (b *backend) stop() error {
	b.quiet.Store(true)
	b.cancel()
	if b.conn != nil {
		b.conn.Close()
	}
	err := <-b.done
	b.done <- err
	return err
}

// Run serves the session: it starts virtiofsd, accepts the VM on the
// socket at once, relays until the VM hangs up, and answers reload
// requests meanwhile. A VM that connects before virtiofsd is ready has
// its first requests wait in virtiofsd's private socket, answered as soon
// as virtiofsd is: a cold start's first reply waits for virtiofsd alone,
// not for the shim to read its readiness line. Should virtiofsd fail
// before it is ready, the VM's connection is closed (QEMU's device setup
// fails with it) rather than left queued on a socket whose service fails.
// Its outcome and error are those launch.Supervisor.RunSession gives for a
// session without the front.
func (s *Session) Run(ctx context.Context) (launch.Outcome, error) {
	var out launch.Outcome
	in := s.Instance
	s.respawns = make(chan respawnRequest)
	if in.State != nil {
		in.State.Update(func(st *state.State) { st.Front, st.Handovers, st.Degraded = true, 0, nil })
	}
	// A resumed session's virtiofsd stays quiet until the VM is served
	// again (READY=1 then, not at its readiness line), and the shim
	// connects to it at once: the VM is already there.
	// Its virtiofsd fails only a file it cannot carry (plan.ForResume).
	resuming := s.Checkpoint != nil || s.Crashed != nil
	first := s.Plan
	if s.Checkpoint != nil {
		first = plan.ForResume(s.Plan)
	}
	b, err := s.start(ctx, first, resuming, resuming)
	if err != nil {
		if s.Checkpoint != nil {
			s.Checkpoint.Close()
		}
		if s.Crashed != nil {
			s.Instance.dropCrashRecord(s.Crashed)
		}
		return out, err
	}
	s.cur = b
	s.publishBinary(b)
	s.planMovable(s.Plan)
	defer s.reapRetired()

	var (
		accepted  = make(chan *net.UnixConn, 1)
		acceptErr = make(chan error, 1)
		frontDone = make(chan error, 1)
		listener  net.Listener
		ready     = b.ready
		release   = s.Release
		early     bool // the VM was accepted before virtiofsd was ready
	)
	// The front's context: cancelled when the session returns, not with
	// ctx, so that a restart can still save the session.
	fctx, fcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		fcancel()
		if listener != nil {
			listener.Close()
		}
	}()
	listen := func() error {
		l, err := net.FileListener(s.Sock.File)
		if err != nil {
			return fmt.Errorf("accept on %s: %w", s.Sock, err)
		}
		listener = l
		go func() {
			c, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c.(*net.UnixConn)
		}()
		return nil
	}
	if !resuming && s.cur.waitStarted() {
		if err := listen(); err != nil {
			_ = s.cur.stop()
			return out, err
		}
	}
	for {
		select {
		case <-ready:
			ready = nil
			if s.Crashed != nil || s.Checkpoint != nil {
				f, served := s.resumeKept(ctx)
				if f == nil {
					// The socket is served as usual, by a virtiofsd that
					// did not see the failed resume.
					_ = s.cur.stop()
					if s.cur, err = s.start(ctx, s.Plan, false, false); err != nil {
						return out, err
					}
					s.publishBinary(s.cur)
					s.setMovable(func(m *movability) { m.front = "" }) // no VM
					ready = s.cur.ready
					if err := listen(); err != nil {
						_ = s.cur.stop()
						return out, err
					}
					continue
				}
				out.Served = true
				s.connected.Store(true)
				s.front = f
				s.speak(s.cur)
				served()
				go func() { frontDone <- f.Run(fctx) }()
				continue
			}
			if early {
				// The VM connected before virtiofsd was ready: it is
				// served from now on. READY=1 said so, unless the VM
				// came just after it was sent.
				early = false
				if s.cur.saidServing.Load() {
					if w := in.State; w != nil {
						w.Update(func(st *state.State) { st.Phase = state.Serving })
					}
				} else {
					s.served()
				}
			}
		case c := <-accepted:
			out.Served = true
			s.connected.Store(true)
			if s.cur.conn == nil {
				conn, err := s.cur.private.connect()
				if err != nil {
					// Refused: virtiofsd ended (its supervisor closed the
					// socket), and its own error says why.
					c.Close()
					ready := s.cur.isReady()
					if verr := s.cur.stop(); verr != nil {
						if !ready {
							s.notReady()
						}
						return out, verr
					}
					return out, err
				}
				s.cur.conn = conn
			}
			s.front = front.New(c, s.cur.conn, s.frontConfig(ctx))
			// The VM waits for its first reply: the front relays first,
			// the state, journal and status lines follow.
			f := s.front
			go func() { frontDone <- f.Run(fctx) }()
			if !s.cur.isReady() {
				early = true
				s.Log.Info("the VM connected before virtiofsd was ready: the shim relays its vhost-user session, and virtiofsd answers once it is ready")
				continue
			}
			s.Log.Info("the VM connected: the shim relays its vhost-user session to virtiofsd")
			s.served()
		case err := <-acceptErr:
			if ctx.Err() == nil && !out.Released {
				_ = s.cur.stop()
				return out, fmt.Errorf("accept the VM's connection on %s: %w", s.Sock, err)
			}
		case err := <-frontDone:
			return out, s.ended(ctx, err)
		case err := <-s.curDone():
			// virtiofsd ended: without a VM, that is the session's end
			// as before; with one, a crash is the front's to recover (it
			// calls for a fresh virtiofsd, or ends), and a clean end means
			// the front sees its connection end too.
			if s.crashed(err) {
				continue
			}
			if s.front != nil {
				fcancel()
				<-frontDone
			}
			if bo := s.cur.outcome; bo.Released {
				out.Released = true
			}
			return out, err
		case <-release:
			release = nil
			out.Released = true
			// A VM accepted but not yet handled, or queued on the
			// socket, is as good as served.
			if s.front != nil || len(accepted) > 0 || launch.PendingClient(s.Sock.File) {
				if in.State != nil {
					in.State.Update(func(st *state.State) { st.Release = state.KeepsServing })
				}
				s.Log.Info("the socket was stopped: this session goes on until the VM disconnects, and no session follows it")
				continue
			}
			if in.State != nil {
				in.State.Update(func(st *state.State) { st.Phase, st.Release = state.Released, state.LetGo })
			}
			s.Log.Info("the socket was stopped: stopping the virtiofsd that waits on it, which has no client")
			s.cur.quiet.Store(true)
			_ = s.cur.stop()
			return out, nil
		case req := <-s.respawns:
			req.reply <- s.respawn(ctx, req)
		case <-s.Reloads:
			s.answer(s.reload(ctx))
		case <-ctx.Done():
			if s.front != nil && s.keepForRestart(frontDone) {
				// The front let go of the session, and the old virtiofsd's
				// connection: it ends by itself.
				return out, s.cur.stop()
			}
			// The service stops: the current supervisor stops virtiofsd
			// (STOPPING=1), the front closes the VM's connection.
			fcancel()
			s.cur.cancel()
			err := <-s.cur.done
			if s.front != nil {
				<-frontDone
			}
			return out, err
		}
	}
}

// ended is the session's end once the front returned: the VM hung up
// (virtiofsd then exits by itself), sent a malformed message, or
// virtiofsd's connection broke.
func (s *Session) ended(ctx context.Context, ferr error) error {
	err := <-s.cur.done // its connection is closed: it ends by itself
	var perr *vhostuser.ProtocolError
	var rerr *front.RecoveryError
	switch {
	case (errors.As(ferr, &rerr) || errors.Is(ferr, front.ErrBackendGone)) && !s.cur.isReady():
		// virtiofsd failed before it was ready, the VM connected: its
		// own error says how (launch.ExitError, BeforeReady).
		s.notReady()
		if err == nil {
			err = ferr
		}
		return err
	case errors.As(ferr, &rerr):
		if gerr := s.gaveUp(rerr); gerr != nil {
			return gerr
		}
		if err == nil {
			return fmt.Errorf("relay the VM's session: %w", ferr)
		}
		return err
	case errors.As(ferr, &perr):
		s.Log.WithField("rule", perr.Rule).WithField("request", perr.Request.String()).Error(
			"the VM sent a malformed vhost-user message: its session is ended")
		return &VMProtocolError{Err: ferr}
	case err != nil:
		return err
	case ferr != nil && ctx.Err() == nil && !errors.Is(ferr, front.ErrBackendGone):
		return fmt.Errorf("relay the VM's session: %w", ferr)
	}
	return nil
}

// reapRetired waits for the virtiofsd processes swapped out, stopping
// any that does not end by itself within its stop timeout.
func (s *Session) reapRetired() {
	for _, b := range s.retired {
		select {
		case err := <-b.done:
			b.done <- err
		case <-time.After(config.DefaultStopTimeout):
			_ = b.stop()
		}
	}
	s.retired = nil
}

// retire leaves b, swapped out, to end by itself.
func (s *Session) retire(b *backend) {
	b.quiet.Store(true)
	s.retired = append(s.retired, b)
	go func() {
		err := <-b.done
		b.done <- err
		if err != nil {
			s.Log.WithError(err).WithField("virtiofsd_pid", b.pid.Load()).Warn("the virtiofsd swapped out ended in failure; the session goes on")
		}
	}()
}

// served says the VM is served, in the state and to systemd.
func (s *Session) served() {
	if w := s.Instance.State; w != nil {
		w.Update(func(st *state.State) { st.Phase = state.Serving })
	}
	s.statusServing()
}

// statusServing tells systemd (STATUS=) that the VM is served, and by
// which virtiofsd: when the VM connects, and after each swap.
func (s *Session) statusServing() {
	if n := s.Instance.Notifier; n != nil {
		_ = n.Notify(launch.ServingStatus(s.Sock.String(), s.Plan.Config.SharedDir, int(s.cur.pid.Load())))
	}
}
