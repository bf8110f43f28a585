package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// Step names a step of a swap, for its errors.
type Step string

// The steps of a swap, in order (DESIGN.md, "vhost-user front").
const (
	StepCheck   Step = "check the session"
	StepPrepare Step = "give the new virtiofsd the recorded setup"
	StepFreeze  Step = "stop the old virtiofsd's rings"
	StepSave    Step = "save the old virtiofsd's state"
	StepLoad    Step = "load the state into the new virtiofsd"
	StepRings   Step = "start the rings on the new virtiofsd"
)

// SwapError is why a swap failed, and what became of the session.
type SwapError struct {
	Step Step
	Err  error
	// Kept is true when the old virtiofsd still serves the session: the
	// swap failed before it was stopped, or it got its rings back.
	Kept bool
	// RollbackErr is why the old virtiofsd could not get its rings back.
	RollbackErr error
}

func (e *SwapError) Error() string {
	s := fmt.Sprintf("swap virtiofsd: %s: %v", e.Step, e.Err)
	switch {
	case e.Kept:
		s += "; the old virtiofsd keeps the session"
	case e.RollbackErr != nil:
		s += fmt.Sprintf("; giving the rings back to the old virtiofsd failed too: %v", e.RollbackErr)
	}
	return s
}

func (e *SwapError) Unwrap() error { return e.Err }

// SwapResult is what a swap cost.
type SwapResult struct {
	// Pause is how long the rings were stopped: from disabling the old
	// virtiofsd's rings to kicking the new one's.
	Pause time.Duration
	// Freeze is the front's first share of the pause: disabling the old
	// virtiofsd's rings, the settle wait and GET_VRING_BASE.
	Freeze time.Duration
	// Save and Load are virtiofsd's own shares of the pause: from asking
	// for the state to its check, on each side.
	Save, Load time.Duration
	// StateSize is the size of the state handed over, in bytes.
	StateSize int
}

// requestOp is what a request asks of Run's loop. Each runs there with
// nothing outstanding and the VM held.
type requestOp int

const (
	opSwap           requestOp = iota // Swap onto the request's backend
	opCheckpoint                      // Checkpoint
	opSaveForRestart                  // SaveForRestart
	opAnnounce                        // Announce
	opWithdraw                        // Withdraw
)

// swapRequest asks Run's loop for op; backend is a swap's new back end.
type swapRequest struct {
	ctx     context.Context
	op      requestOp
	backend *net.UnixConn
	done    chan swapResponse
}

// refuse answers a request that never started, closing the new
// virtiofsd's connection; kept says whether the old one goes on.
func (r *swapRequest) refuse(err error, kept bool) {
	if r.backend != nil {
		r.backend.Close()
	}
	r.done <- swapResponse{err: &SwapError{Step: StepCheck, Err: err, Kept: kept}}
}

type swapResponse struct {
	res SwapResult
	cp  *Checkpoint // with save
	err error
}

// Swap moves the session onto another virtiofsd, whose connection
// newBackend is (the shim's connection to the listening socket it gave a
// fresh virtiofsd with --fd). It waits until the VM's outstanding requests
// are answered and holds its next ones meanwhile; they are passed on, in
// order, to whichever virtiofsd serves the session once it returns.
//
// Swap owns newBackend: on success the front relays to it and closes the
// old connection (the old virtiofsd then exits by itself); on failure it
// is closed. A failure is a *SwapError that says whether the old
// virtiofsd kept the session. Swap needs Run to be running.
func (f *Front) Swap(ctx context.Context, newBackend *net.UnixConn) (SwapResult, error) {
	req := swapRequest{ctx: ctx, op: opSwap, backend: newBackend, done: make(chan swapResponse, 1)}
	select {
	case f.swaps <- req:
	case <-f.ended:
		newBackend.Close()
		return SwapResult{}, &SwapError{Step: StepCheck, Err: errors.New("the session has ended")}
	case <-ctx.Done():
		newBackend.Close()
		return SwapResult{}, &SwapError{Step: StepCheck, Err: ctx.Err(), Kept: true}
	}
	r := <-req.done
	return r.res, r.err
}

// swap runs in Run's loop with nothing outstanding and the VM held.
func (f *Front) swap(ctx context.Context, newBackend *net.UnixConn) (SwapResult, error) {
	np := newPeer(newBackend)
	ok := false
	defer func() {
		if !ok {
			np.close()
		}
	}()
	if err := f.checkSwappable(); err != nil {
		return SwapResult{}, err
	}
	if err := f.prepare(ctx, np, true); err != nil {
		return SwapResult{}, &SwapError{Step: StepPrepare, Err: err, Kept: true}
	}

	start := f.cfg.Now()
	res, stopped, state, err := f.freezeAndSave(ctx)
	if err != nil {
		return res, err
	}
	t := f.cfg.Now()
	err = loadState(ctx, np, state)
	res.Load = f.cfg.Now().Sub(t)
	if err != nil {
		np.close() // before the old one gets its rings back
		return res, f.rollback(ctx, StepLoad, err, stopped)
	}
	if err := f.startRings(ctx, np, stopped, true); err != nil {
		np.close()
		return res, f.rollback(ctx, StepRings, err, stopped)
	}
	res.Pause = f.cfg.Now().Sub(start)

	ok = true
	old := f.be
	f.be = np
	f.announced = false // the new back end got the VM's own features
	old.close()
	f.mu.Lock()
	f.count++
	f.mu.Unlock()
	return res, nil
}

// checkSwappable refuses a swap or checkpoint the session does not allow.
func (f *Front) checkSwappable() error {
	f.mu.Lock()
	refusal := f.setup.swapRefusal() // only Run's loop writes it; Status reads under f.mu
	f.mu.Unlock()
	if refusal != "" {
		return &SwapError{Step: StepCheck, Err: errors.New(refusal), Kept: true}
	}
	return nil
}

// freezeAndSave stops the serving back end's rings and saves its state;
// on failure it gives the rings back, and says so in its *SwapError.
func (f *Front) freezeAndSave(ctx context.Context) (res SwapResult, stopped map[uint32]uint32, state []byte, err error) {
	start := f.cfg.Now()
	stopped, err = f.freeze(ctx)
	t := f.cfg.Now()
	res.Freeze = t.Sub(start)
	if err != nil {
		return res, stopped, nil, f.rollback(ctx, StepFreeze, err, stopped)
	}
	state, err = saveState(ctx, f.be)
	res.Save, res.StateSize = f.cfg.Now().Sub(t), len(state)
	if err != nil {
		return res, stopped, nil, f.rollback(ctx, StepSave, err, stopped)
	}
	return res, stopped, state, nil
}

// prepare gives the new back end, before the freeze, what the VM set up
// apart from the rings; it refuses one that lacks a feature the VM has
// negotiated, or DEVICE_STATE when the state is to be handed over.
func (f *Front) prepare(ctx context.Context, np *peer, state bool) error {
	s := f.setup
	features, err := np.u64(ctx, vhostuser.GetFeatures, nil)
	if err != nil {
		return err
	}
	if missing := s.features &^ features; missing != 0 {
		return fmt.Errorf("the new virtiofsd lacks feature bits %#x that the VM negotiated; install a virtiofsd at least as new as the running one", missing)
	}
	proto, err := np.u64(ctx, vhostuser.GetProtocolFeatures, nil)
	if err != nil {
		return err
	}
	want := s.backendProtocol
	if state {
		want |= vhostuser.ProtoDeviceState
	}
	if missing := want &^ proto; missing != 0 {
		return fmt.Errorf("the new virtiofsd lacks protocol feature bits %#x that the session needs; install a virtiofsd at least as new as the running one", missing)
	}
	// What the old back end got, the front's own features included. Not
	// acked: REPLY_ACK is only negotiated by this very message. The acked
	// SET_OWNER after it confirms that it was taken.
	if err := np.send(vhostuser.SetProtocolFeatures, vhostuser.U64(s.backendProtocol).Bytes(), nil); err != nil {
		return err
	}
	if s.owner {
		if err := np.ack(ctx, vhostuser.SetOwner, nil); err != nil {
			return err
		}
	}
	if s.backendReq != nil {
		if err := np.ack(ctx, vhostuser.SetBackendReqFD, nil, s.backendReq); err != nil {
			return err
		}
	}
	if s.hasFeatures {
		if err := np.ack(ctx, vhostuser.SetFeatures, vhostuser.U64(s.features).Bytes()); err != nil {
			return err
		}
	}
	if s.protocolFeatures&vhostuser.ProtoConfigureMemSlots != 0 {
		for _, r := range s.regions {
			if err := np.ack(ctx, vhostuser.AddMemReg, vhostuser.SingleMemRegion{MemRegion: r.MemRegion}.Bytes(), r.file); err != nil {
				return err
			}
		}
	} else if len(s.regions) > 0 {
		var t vhostuser.MemTable
		var files []*os.File
		for _, r := range s.regions {
			t.Regions = append(t.Regions, r.MemRegion)
			files = append(files, r.file)
		}
		if err := np.ack(ctx, vhostuser.SetMemTable, t.Bytes(), files...); err != nil {
			return err
		}
	}
	return nil
}

// freeze stops the old back end's started rings and returns where each
// stopped (GET_VRING_BASE), as far as it got.
func (f *Front) freeze(ctx context.Context) (map[uint32]uint32, error) {
	s := f.setup
	stopped := map[uint32]uint32{}
	var started []uint32
	for _, i := range s.ringIndexes() {
		if s.rings[i].started {
			started = append(started, i)
		}
	}
	for _, i := range started {
		if err := f.be.ack(ctx, vhostuser.SetVringEnable, vhostuser.VringState{Index: i, Num: 0}.Bytes()); err != nil {
			return stopped, fmt.Errorf("ring %d: %w", i, err)
		}
	}
	select {
	case <-time.After(f.cfg.Settle):
	case <-ctx.Done():
		return stopped, ctx.Err()
	}
	for _, i := range started {
		m, err := f.be.call(ctx, vhostuser.GetVringBase, vhostuser.VringState{Index: i}.Bytes(), nil, false)
		if err != nil {
			return stopped, fmt.Errorf("ring %d: %w", i, err)
		}
		v, err := vhostuser.ParseVringState(m.Payload)
		m.Close()
		if err != nil {
			return stopped, fmt.Errorf("ring %d: the reply to %s: %w", i, vhostuser.GetVringBase, err)
		}
		if v.Index != i {
			return stopped, fmt.Errorf("ring %d: %s answered for ring %d", i, vhostuser.GetVringBase, v.Index)
		}
		stopped[i] = v.Num
	}
	return stopped, nil
}

// startRings sets up the rings on p where they stopped, in the order
// that does not hang virtiofsd: everything while disabled, kick fds while
// still disabled, then enable, then a kick on each. With all, every
// recorded ring is set up (a new back end); without, only the stopped
// ones (the old back end getting its rings back).
func (f *Front) startRings(ctx context.Context, p *peer, stopped map[uint32]uint32, all bool) error {
	s := f.setup
	// SET_VRING_ENABLE needs VHOST_USER_F_PROTOCOL_FEATURES acked by
	// SET_FEATURES: before the guest's driver starts (QEMU has only
	// realized the device) the real virtiofsd refuses it and ends
	// (InactiveFeature(PROTOCOL_FEATURES)).
	canEnable := s.hasFeatures && s.features&vhostuser.FeatureProtocolFeatures != 0
	var kicked []uint32
	for _, i := range s.ringIndexes() {
		r := s.rings[i]
		base, wasStopped := stopped[i]
		if !wasStopped && !all {
			continue
		}
		if !wasStopped {
			base = r.base
		}
		var msgs []ringMessage
		if canEnable {
			msgs = append(msgs, ringMessage{vhostuser.SetVringEnable, vhostuser.VringState{Index: i, Num: 0}.Bytes(), nil})
		}
		if r.hasNum {
			msgs = append(msgs, ringMessage{vhostuser.SetVringNum, vhostuser.VringState{Index: i, Num: r.num}.Bytes(), nil})
		}
		if r.hasAddr {
			msgs = append(msgs, ringMessage{vhostuser.SetVringAddr, r.addr.Bytes(), nil})
		}
		if wasStopped || r.hasBase {
			msgs = append(msgs, ringMessage{vhostuser.SetVringBase, vhostuser.VringState{Index: i, Num: base}.Bytes(), nil})
		}
		if r.call != nil {
			msgs = append(msgs, r.call.message(vhostuser.SetVringCall, i))
		}
		if r.err != nil {
			msgs = append(msgs, r.err.message(vhostuser.SetVringErr, i))
		}
		for _, m := range msgs {
			if err := p.ackRing(ctx, m); err != nil {
				return fmt.Errorf("ring %d: %w", i, err)
			}
		}
		if wasStopped && r.kick != nil {
			kicked = append(kicked, i)
		}
	}
	for _, i := range kicked {
		m := s.rings[i].kick.message(vhostuser.SetVringKick, i)
		if err := p.ackRing(ctx, m); err != nil {
			return fmt.Errorf("ring %d: %w", i, err)
		}
	}
	for _, i := range kicked {
		if s.rings[i].enabled {
			if err := p.ack(ctx, vhostuser.SetVringEnable, vhostuser.VringState{Index: i, Num: 1}.Bytes()); err != nil {
				return fmt.Errorf("ring %d: %w", i, err)
			}
		}
	}
	for _, i := range kicked {
		if k := s.rings[i].kick; k.fd != nil {
			if err := kick(k.fd); err != nil {
				return fmt.Errorf("ring %d: kick: %w", i, err)
			}
		}
	}
	return nil
}

type ringMessage struct {
	req     vhostuser.Request
	payload []byte
	fd      *held // sent with it, when not nil
}

func (e *eventFD) message(req vhostuser.Request, index uint32) ringMessage {
	m := ringMessage{req: req, payload: vhostuser.VringFD{Index: uint8(index), NoFD: e.noFD}.Bytes()}
	if !e.noFD {
		m.fd = e.fd
	}
	return m
}

// ackRing sends m, its held descriptor as a short-lived *os.File (see held).
func (p *peer) ackRing(ctx context.Context, m ringMessage) error {
	if m.fd == nil {
		return p.ack(ctx, m.req, m.payload)
	}
	f, err := m.fd.file()
	if err != nil {
		return err
	}
	defer f.Close()
	return p.ack(ctx, m.req, m.payload, f)
}

// rollback gives the old back end its stopped rings back after a failed
// step, and says what became of the session.
func (f *Front) rollback(ctx context.Context, step Step, err error, stopped map[uint32]uint32) error {
	e := &SwapError{Step: step, Err: err}
	// The swap's own deadline may be what failed it: the rollback gets
	// its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if rerr := f.giveBack(ctx, stopped); rerr != nil {
		e.RollbackErr = rerr
	} else {
		e.Kept = true
		// The session goes on: the old back end stops collecting for a
		// save; a failure here costs lookups, not the session.
		_ = f.withdraw(ctx)
	}
	return e
}

// rollbackTimeout bounds giving the rings back to the old virtiofsd.
const rollbackTimeout = 10 * time.Second

// giveBack restarts on the old back end the rings freeze stopped or
// disabled: GET_VRING_BASE dropped their kick and call fds.
func (f *Front) giveBack(ctx context.Context, stopped map[uint32]uint32) error {
	if err := f.startRings(ctx, f.be, stopped, false); err != nil {
		return err
	}
	// Rings disabled but not stopped (the freeze failed half way) only
	// need enabling again.
	for _, i := range f.setup.ringIndexes() {
		r := f.setup.rings[i]
		if _, ok := stopped[i]; ok || !r.started {
			continue
		}
		if r.enabled {
			if err := f.be.ack(ctx, vhostuser.SetVringEnable, vhostuser.VringState{Index: i, Num: 1}.Bytes()); err != nil {
				return fmt.Errorf("ring %d: %w", i, err)
			}
		}
		if r.kick != nil && r.kick.fd != nil {
			if err := kick(r.kick.fd); err != nil {
				return fmt.Errorf("ring %d: kick: %w", i, err)
			}
		}
	}
	return nil
}

// saveState has a stopped back end write its state into a pipe and
// returns it once the back end says it is complete.
func saveState(ctx context.Context, p *peer) ([]byte, error) {
	r, w, err := statePipe(true)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		got <- result{b, err}
	}()
	err = deviceStateFD(ctx, p, vhostuser.DeviceStateFD{Direction: vhostuser.DirectionSave, Phase: vhostuser.PhaseStopped}, w)
	w.Close()
	if err != nil {
		return nil, err
	}
	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("read the state: %w", ctx.Err())
	}
	if res.err != nil {
		return nil, fmt.Errorf("read the state: %w", res.err)
	}
	if err := checkDeviceState(ctx, p); err != nil {
		return nil, err
	}
	return res.b, nil
}

// statePipe makes the pipe the state goes through. The end virtiofsd gets
// stays blocking: os.Pipe makes both ends non-blocking, and virtiofsd
// then fails on EAGAIN ("Failed to load state: Resource temporarily
// unavailable", seen with the real 1.13.2) whenever the front has not
// written yet. The front's own end (the read end with ourRead) is
// non-blocking, for Go's poller.
func statePipe(ourRead bool) (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("make a pipe for the state: %w", err)
	}
	ours := fds[1]
	if ourRead {
		ours = fds[0]
	}
	if err := unix.SetNonblock(ours, true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("make a pipe for the state: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "state pipe (read)"), os.NewFile(uintptr(fds[1]), "state pipe (write)"), nil
}

// loadState has a new back end read the state from a pipe and checks
// that it took it.
func loadState(ctx context.Context, p *peer, state []byte) error {
	r, w, err := statePipe(false)
	if err != nil {
		return err
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(state)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		wrote <- err
	}()
	err = deviceStateFD(ctx, p, vhostuser.DeviceStateFD{Direction: vhostuser.DirectionLoad, Phase: vhostuser.PhaseStopped}, r)
	r.Close()
	if err != nil {
		w.Close() // ends the writer
		<-wrote
		return err
	}
	select {
	case err = <-wrote:
	case <-ctx.Done():
		w.Close()
		<-wrote
		return fmt.Errorf("write the state: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("write the state: %w", err)
	}
	return checkDeviceState(ctx, p)
}

func deviceStateFD(ctx context.Context, p *peer, d vhostuser.DeviceStateFD, f *os.File) error {
	m, err := p.call(ctx, vhostuser.SetDeviceStateFD, d.Bytes(), []*os.File{f}, false)
	if err != nil {
		return err
	}
	defer m.Close()
	v, err := vhostuser.ParseDeviceStateReply(m.Payload)
	if err != nil {
		return fmt.Errorf("the reply to %s: %w", vhostuser.SetDeviceStateFD, err)
	}
	if v.Error != 0 {
		return fmt.Errorf("virtiofsd refused %s (error %d); its log says why", vhostuser.SetDeviceStateFD, v.Error)
	}
	if !v.NoFD || len(m.Files) > 0 {
		return fmt.Errorf("virtiofsd answered %s with an fd of its own, which the front does not support", vhostuser.SetDeviceStateFD)
	}
	return nil
}

func checkDeviceState(ctx context.Context, p *peer) error {
	v, err := p.u64(ctx, vhostuser.CheckDeviceState, nil)
	if err != nil {
		return err
	}
	if v != 0 {
		return fmt.Errorf("virtiofsd reports the state transfer failed (%s: %d); its log says why", vhostuser.CheckDeviceState, v)
	}
	return nil
}
