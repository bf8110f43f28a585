// Package front answers how the shim stands between the VM and virtiofsd on
// the vhost-user socket: it relays every message, records the setup the VM
// made, and swaps the session onto a fresh virtiofsd (DESIGN.md, "vhost-user
// front").
package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// Config tunes a Front; the zero value is what the shim uses.
type Config struct {
	// Settle is how long the swap waits after disabling the old back end's
	// rings before it asks where they stopped, as QEMU does; 0 means
	// DefaultSettle.
	Settle time.Duration
	// Now reads the clock for the swap's durations; nil means time.Now.
	Now func() time.Time
	// Respawn, when set, gives Run a fresh virtiofsd when the one serving
	// the session dies while the VM is connected (killed, panicked, OOM
	// killed): the connection to it, as for Swap. cause says how the last
	// one ended (it wraps ErrBackendGone). Run replays the setup onto it
	// and goes on, degraded (DESIGN.md, "Crash without state"). Respawn
	// bounds the crashes: once it fails, Run ends with a *RecoveryError.
	// nil: Run ends when the back end dies.
	Respawn func(ctx context.Context, cause error) (*net.UnixConn, error)
	// ThreadPool says the session's virtiofsd runs a thread pool
	// (--thread-pool-size): it may complete requests out of order, so a
	// crash is not recovered (restarting a ring at its used index could
	// run a request twice or lose one).
	ThreadPool bool
	// Recovered, when set, is told of each recovery, from Run's goroutine.
	Recovered func(Recovery)
	// Swappable, when set, is told whether Swap may be tried now, and if
	// not why (Status's Swappable and Reason): when Run starts, and each
	// time that changes as the VM sets up, from Run's goroutine.
	Swappable func(ok bool, reason string)
	// RestoreCheckpoint loads the last checkpoint (Front.Checkpoint) into
	// the fresh virtiofsd of a recovery. Off by default, and to stay off:
	// an experiment of issue 25 (test/fronttest, TestCheckpointsMeasured)
	// showed the restored Rust virtiofsd 1.13.2 answering with another
	// file's data (a file renamed after the checkpoint, an inode number
	// handed out again), where without it the guest gets EBADF.
	RestoreCheckpoint bool
	// Journal, when set, keeps the session in systemd's file descriptor
	// store while Run relays it, so that a shim killed with kill -9 leaves
	// it for the next one (LoadCrashRecord, ResumeAfterCrash): the VM's
	// connection before the first request is read, and the recorded setup
	// and the requests awaiting a reply before each request is passed on.
	// Run drops it from the store when it returns.
	Journal Store
	// JournalFailed, when set, is told once that the journal failed (the
	// session goes on, but a shim crash would lose it), from Run's
	// goroutine.
	JournalFailed func(error)
}

// cfgNow is c's clock.
func cfgNow(c Config) func() time.Time {
	if c.Now == nil {
		return time.Now
	}
	return c.Now
}

// DefaultSettle is the wait between disabling a back end's rings and
// GET_VRING_BASE. It is most of the front's share of the pause, and it
// stays: the Rust virtiofsd's worker (vhost-user-backend 0.17's event
// loop) reads a ring's enabled flag when a kick arrives and only then
// takes the ring's lock to process it. GET_VRING_BASE marks the queue not
// ready under that lock; a worker that read "enabled" before the disable
// and is descheduled until after GET_VRING_BASE then processes a queue
// that is not ready, which is how virtiofsd loops for good (DESIGN.md,
// "vhost-user front"). The wait lets such a worker reach the lock first;
// on 2 loaded cores a thread can stay off a CPU for milliseconds.
const DefaultSettle = 5 * time.Millisecond

// Front is the VM's end of a vhost-user session, relaying it to one
// back end at a time. Run relays; Swap, Status may be called from other
// goroutines while it does.
type Front struct {
	cfg   Config
	vm    *peer
	be    *peer // owned by Run's loop
	swaps chan swapRequest
	ended chan struct{} // closed when Run returns

	mu    sync.Mutex // guards setup and swaps
	setup *setup
	count int // completed swaps
	// recoveries counts the crashes recovered; lastRecovery is the last.
	recoveries   int
	lastRecovery Recovery
	// checkpointState is the last state saved by Checkpoint, nil when none
	// is valid (none taken, or the device was reset since).
	checkpointState []byte
	checkpoints     int

	// outstanding are the VM's requests whose replies are due, in order.
	// Owned by Run's loop.
	outstanding []*vhostuser.Message
	// journal keeps the session in systemd's store (Config.Journal); nil
	// without one. Owned by Run's loop.
	journal *journal
	// announced: the serving back end got F_LOG_ALL from Announce, and
	// neither a swap, a Withdraw nor the VM's own SET_FEATURES has ended
	// it. Owned by Run's loop.
	announced bool
}

// New returns a Front for the VM's connection and the back end's. It
// owns both from now on: Run closes them when it returns.
func New(vm, backend *net.UnixConn, cfg Config) *Front {
	if cfg.Settle == 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := &Front{
		cfg:   cfg,
		vm:    newPeer(vm),
		be:    newPeer(backend),
		swaps: make(chan swapRequest),
		ended: make(chan struct{}),
		setup: newSetup(),
	}
	if cfg.Journal != nil {
		f.journal = newJournal(cfg.Journal)
	}
	return f
}

// startJournal stores the VM's connection, before Run reads a request.
func (f *Front) startJournal() {
	if f.journal == nil {
		return
	}
	vm, err := f.vm.dupConn()
	if err == nil {
		err = f.journal.start(vm)
		vm.Close()
	}
	if err != nil {
		f.journalFailed(err)
	}
}

// persist writes the crash record when it changed: the setup, the
// requests awaiting a reply, and extra (a request about to be passed on
// whose reply the VM will wait for), if not nil.
func (f *Front) persist(extra *vhostuser.Message) {
	if f.journal == nil || f.journal.err != nil {
		return
	}
	f.mu.Lock()
	err := f.journal.write(f.setup, f.outstanding, extra)
	f.mu.Unlock()
	if err != nil {
		f.journalFailed(err)
	}
}

func (f *Front) journalFailed(err error) {
	if f.journal.err == nil {
		f.journal.err = err
	}
	if f.cfg.JournalFailed != nil {
		f.cfg.JournalFailed(err)
	}
}

// ErrBackendGone is wrapped by Run's error when the back end hangs up or
// breaks while the VM is still connected: virtiofsd died.
var ErrBackendGone = errors.New("virtiofsd's connection ended")

// Run relays the session until the VM hangs up (nil), the back end
// breaks (an error wrapping ErrBackendGone; with Config.Respawn, only once
// the session cannot be recovered, a *RecoveryError), the VM sends what
// cannot be parsed (a *vhostuser.ProtocolError), SaveForRestart takes the
// session (ErrSavedForRestart), or ctx ends. It then closes both
// connections and the recorded fds (a saved session holds its own).
func (f *Front) Run(ctx context.Context) error {
	defer close(f.ended)
	defer f.close()
	if f.journal != nil {
		defer f.journal.drop()
		f.startJournal()
		f.persist(nil)
	}
	var pending *swapRequest
	defer func() {
		if pending != nil {
			pending.refuse(errors.New("the session ended before the swap could start"), false)
		}
	}()
	told := "\x00" // no verdict told yet
	for {
		told = f.tellSwappable(told)
		// While a swap waits, the VM's next requests wait too: once the
		// replies it waits for are in, nothing changes under the swap.
		vmMsgs := f.vm.msgs
		var gaveUp <-chan struct{}
		if pending != nil {
			vmMsgs = nil
			gaveUp = pending.ctx.Done()
		}
		select {
		case r := <-vmMsgs:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					return nil
				}
				return fmt.Errorf("read the VM's request: %w", r.err)
			}
			if err := f.relayRequest(r.m); err != nil {
				if !errors.Is(err, ErrBackendGone) {
					return err
				}
				if err := f.backendGone(ctx, err, &pending); err != nil {
					return err
				}
			}
		case r := <-f.be.msgs:
			if r.err != nil {
				if err := f.backendGone(ctx, fmt.Errorf("%w: %w", ErrBackendGone, r.err), &pending); err != nil {
					return err
				}
				continue
			}
			if err := f.relayReply(r.m); err != nil {
				return err
			}
		case req := <-f.swaps:
			if pending != nil {
				req.refuse(errors.New("another swap is under way; retry when it ends"), true)
				continue
			}
			pending = &req
		case <-gaveUp:
			pending.refuse(fmt.Errorf("the replies QEMU waits for did not come: %w", pending.ctx.Err()), true)
			pending = nil
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		f.persist(nil)
		if pending != nil && len(f.outstanding) == 0 {
			if pending.op == opSaveForRestart {
				cp, ended, err := f.saveForRestart(pending.ctx)
				pending.done <- swapResponse{cp: cp, err: err}
				pending = nil
				if ended {
					if err != nil {
						return err
					}
					return ErrSavedForRestart
				}
				continue
			}
			if pending.op == opAnnounce || pending.op == opWithdraw {
				pending.done <- swapResponse{err: f.runAnnounce(pending.ctx, pending.op)}
				pending = nil
				continue
			}
			var res SwapResult
			var err error
			if pending.op == opCheckpoint {
				res, err = f.checkpoint(pending.ctx)
			} else {
				res, err = f.swap(pending.ctx, pending.backend)
			}
			pending.done <- swapResponse{res: res, err: err}
			pending = nil
			// A swap that could not give the rings back has lost the old
			// virtiofsd, which may have died under it: with Respawn, a
			// fresh one takes the session.
			var se *SwapError
			if errors.As(err, &se) && !se.Kept && f.cfg.Respawn != nil {
				cause := fmt.Errorf("%w: the failed swap could not give its rings back: %w", ErrBackendGone, se)
				if err := f.backendGone(ctx, cause, &pending); err != nil {
					return err
				}
			}
		}
	}
}

// tellSwappable tells Config.Swappable the session's verdict if it is not
// told, and returns it. Run's loop alone writes the setup, so it reads it
// without the lock.
func (f *Front) tellSwappable(told string) string {
	if f.cfg.Swappable == nil {
		return told
	}
	reason := f.setup.swapRefusal()
	if reason != told {
		f.cfg.Swappable(reason == "", reason)
	}
	return reason
}

// backendGone handles the back end's death (cause wraps ErrBackendGone):
// a swap waiting to start is refused, and the session is recovered onto a
// fresh virtiofsd, or Run must end with the error returned.
func (f *Front) backendGone(ctx context.Context, cause error, pending **swapRequest) error {
	if *pending != nil {
		(*pending).refuse(fmt.Errorf("virtiofsd died before the swap could start: %w", cause), false)
		*pending = nil
	}
	if f.cfg.Respawn == nil {
		return cause
	}
	return f.recoverFrom(ctx, cause)
}

func (f *Front) close() {
	f.vm.close()
	f.be.close()
	for _, m := range f.outstanding {
		m.Close()
	}
	f.outstanding = nil
	f.mu.Lock()
	f.setup.close()
	f.mu.Unlock()
}

// relayRequest records a request of the VM's and passes it on with its
// fds; a request that will be answered is kept until its reply.
func (f *Front) relayRequest(m *vhostuser.Message) error {
	spec, known := vhostuser.Lookup(m.Request)
	f.mu.Lock()
	f.setup.recordRequest(m, known)
	if m.Request == vhostuser.SetFeatures {
		f.announced = false // the VM's own features replace the announce
	}
	proto := f.setup.protocolFeatures
	f.setup.toBackend(m)
	if m.Request == vhostuser.ResetDevice || m.Request == vhostuser.ResetOwner {
		f.checkpointState = nil // of a FUSE session the guest has left
	}
	f.mu.Unlock()
	expect := m.NeedsReply() && proto&vhostuser.ProtoReplyAck != 0
	if known {
		expect = spec.ReplyExpected(m.Header, proto)
	}
	if expect {
		f.persist(m)
	} else {
		f.persist(nil)
	}
	err := f.be.conn.WriteMessage(m)
	m.Close() // the back end has its own copies of the fds now
	if expect {
		// Even when it could not be passed on: the VM waits for its
		// reply all the same, and a recovery answers it.
		m.Files = nil
		f.outstanding = append(f.outstanding, m)
	}
	if err != nil {
		return fmt.Errorf("%w: pass on %s: %w", ErrBackendGone, m.Request, err)
	}
	return nil
}

// relayReply records a back end's reply and passes it on to the VM.
func (f *Front) relayReply(m *vhostuser.Message) error {
	defer m.Close()
	if len(f.outstanding) > 0 {
		req := f.outstanding[0]
		f.outstanding = f.outstanding[1:]
		if req.Request == m.Request {
			f.mu.Lock()
			f.setup.recordReply(req, m)
			f.mu.Unlock()
		}
	}
	if err := f.vm.conn.WriteMessage(m); err != nil {
		return fmt.Errorf("pass %s's reply on to the VM: %w", m.Request, err)
	}
	f.persist(nil)
	return nil
}

// Status is a read-only view of the session, for the state file.
type Status struct {
	// Swaps is how many swaps completed in this session.
	Swaps int
	// UnknownRequests counts the requests the front passed on without
	// knowing them.
	UnknownRequests int
	// Swappable says whether Swap may be tried; Reason says why not.
	Swappable bool
	Reason    string
	// Recoverable says whether the session would go on after a crash of
	// virtiofsd; RecoveryReason says why not.
	Recoverable    bool
	RecoveryReason string
	// Degraded: virtiofsd crashed at least once and the session went on
	// without its FUSE state; the guest's requests fail (EBADF) until it
	// mounts the share again with nothing held open on it. Recoveries
	// counts the crashes recovered, LastRecovery is the last one.
	Degraded     bool
	Recoveries   int
	LastRecovery Recovery
	// Checkpoints counts the checkpoints taken.
	Checkpoints int
	// Setup is what the VM set up, as recorded.
	Setup SetupView
}

// SetupView is the recorded setup, without its fds.
type SetupView struct {
	Features, ProtocolFeatures uint64
	// BackendProtocolFeatures are those virtiofsd got: ProtocolFeatures
	// plus the DEVICE_STATE and REPLY_ACK the front needs, where offered.
	BackendProtocolFeatures uint64
	Owner                   bool
	Regions                 []vhostuser.MemRegion
	Rings                   []RingView
	BackendChannel          bool // SET_BACKEND_REQ_FD was recorded
	Log                     bool // SET_LOG_BASE was recorded (dirty logging)
}

// RingView is one ring's recorded setup.
type RingView struct {
	Index, Num, Base uint32
	Addr             vhostuser.VringAddr
	Kick, Call, Err  bool // an fd (or "no fd") was recorded
	Started, Enabled bool
}

// Status returns the session's counters and recorded setup.
func (f *Front) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.setup
	reason := s.swapRefusal()
	recovery := f.recoveryRefusal()
	v := Status{
		Swaps: f.count, UnknownRequests: s.unknown, Swappable: reason == "", Reason: reason,
		Recoverable: recovery == "", RecoveryReason: recovery,
		Degraded: f.recoveries > 0, Recoveries: f.recoveries, LastRecovery: f.lastRecovery,
		Checkpoints: f.checkpoints,
	}
	v.LastRecovery.Bases = maps.Clone(v.LastRecovery.Bases)
	v.Setup = SetupView{
		Features: s.features, ProtocolFeatures: s.protocolFeatures, BackendProtocolFeatures: s.backendProtocol,
		Owner: s.owner, BackendChannel: s.backendReq != nil, Log: s.logBase != nil,
	}
	for _, r := range s.regions {
		v.Setup.Regions = append(v.Setup.Regions, r.MemRegion)
	}
	for _, i := range s.ringIndexes() {
		r := s.rings[i]
		v.Setup.Rings = append(v.Setup.Rings, RingView{
			Index: i, Num: r.num, Base: r.base, Addr: r.addr,
			Kick: r.kick != nil, Call: r.call != nil, Err: r.err != nil,
			Started: r.started, Enabled: r.enabled,
		})
	}
	return v
}
