package front

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// RecoveryError is why Run could not go on after the back end died: its
// error, returned when recovery is refused (Reason) or every fresh
// virtiofsd Respawn gave failed. Cause wraps ErrBackendGone.
type RecoveryError struct {
	Cause error
	Err   error
}

func (e *RecoveryError) Error() string {
	return fmt.Sprintf("%v; the session cannot go on: %v", e.Cause, e.Err)
}

func (e *RecoveryError) Unwrap() []error { return []error{e.Cause, e.Err} }

// Recovery is one recovery of the session onto a fresh virtiofsd, for the
// caller's journal and state.
type Recovery struct {
	// Cause is how the dead virtiofsd's connection ended.
	Cause error
	// Took is from noticing the death to kicking the fresh virtiofsd's
	// rings; Respawn is Config.Respawn's share of it.
	Took, Respawn time.Duration
	// Bases are the rings' restart indexes: each started ring's used
	// index, read from guest memory.
	Bases map[uint32]uint32
	// Answered counts the VM's requests the dead virtiofsd never answered
	// that the front answered or failed.
	Answered int
	// Restored is the size of the checkpoint loaded into the fresh
	// virtiofsd (Config.RestoreCheckpoint), 0 when none was.
	Restored int
}

// recoveryTimeout bounds replaying the setup onto a fresh virtiofsd.
const recoveryTimeout = 10 * time.Second

// recoveryRefusal says why the session cannot go on on a fresh virtiofsd
// after a crash, "" when it can. It reads the setup: call with f.mu held
// or from Run's loop.
func (f *Front) recoveryRefusal() string {
	s := f.setup
	switch {
	case f.cfg.Respawn == nil:
		return "no fresh virtiofsd can be started for it (the front has no Respawn)"
	case f.cfg.ThreadPool:
		return "virtiofsd runs a thread pool (--thread-pool-size), so it may have completed the guest's requests out of order, " +
			"and restarting its rings at the used index could run a request twice or lose one; run it without a thread pool to have crashes recovered"
	case s.unswappable != "":
		return s.unswappable
	case !s.hasProtocolFeatures || s.backendProtocol&vhostuser.ProtoReplyAck == 0:
		return "virtiofsd has not negotiated REPLY_ACK (neither the VM nor the front could set it), so the front cannot check what the fresh virtiofsd takes"
	case s.features&vhostuser.FeatureLogAll != 0:
		return "dirty logging is on (a live migration is under way), and the log is not replayed"
	}
	return ""
}

// recoverFrom runs in Run's loop once the back end is gone (cause): it asks
// Config.Respawn for a fresh virtiofsd, replays the setup onto it with the
// rings restarted at their used indexes, and answers the requests the dead
// one left unanswered. It tries again with another fresh virtiofsd while
// the replay fails; Respawn bounds the tries by failing.
func (f *Front) recoverFrom(ctx context.Context, cause error) error {
	start := f.cfg.Now()
	f.be.close()
	f.mu.Lock()
	refusal := f.recoveryRefusal()
	f.mu.Unlock()
	if refusal != "" {
		return &RecoveryError{Cause: cause, Err: errors.New(refusal)}
	}
	// No back end moves the rings now: where they stand does not change
	// until the fresh one runs.
	bases, err := f.usedIndexes()
	if err != nil {
		return &RecoveryError{Cause: cause, Err: err}
	}
	last := cause
	for {
		t := f.cfg.Now()
		conn, err := f.cfg.Respawn(ctx, last)
		respawn := f.cfg.Now().Sub(t)
		if err != nil {
			return &RecoveryError{Cause: cause, Err: fmt.Errorf("start a fresh virtiofsd: %w", err)}
		}
		rec, err := f.replay(ctx, conn, bases)
		if err != nil {
			last = fmt.Errorf("%w: the fresh virtiofsd did not take the session: %w", ErrBackendGone, err)
			continue
		}
		rec.Cause, rec.Respawn, rec.Took = cause, respawn, f.cfg.Now().Sub(start)
		f.mu.Lock()
		f.recoveries++
		f.lastRecovery = rec
		rec.Bases = maps.Clone(rec.Bases) // the caller's copy
		f.mu.Unlock()
		if f.cfg.Recovered != nil {
			f.cfg.Recovered(rec)
		}
		return nil
	}
}

// replay gives a fresh back end the recorded setup and the rings, and then
// answers the VM's outstanding requests. On failure conn is closed and the
// session still has no back end.
func (f *Front) replay(ctx context.Context, conn *net.UnixConn, bases map[uint32]uint32) (Recovery, error) {
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	np := newPeer(conn)
	var rec Recovery
	f.mu.Lock()
	state := f.checkpointState
	f.mu.Unlock()
	restore := f.cfg.RestoreCheckpoint && state != nil
	if err := f.prepare(ctx, np, restore); err != nil {
		np.close()
		return rec, fmt.Errorf("%s: %w", StepPrepare, err)
	}
	if restore {
		if err := loadState(ctx, np, state); err != nil {
			// Not again: the next fresh virtiofsd starts without it.
			f.mu.Lock()
			f.checkpointState = nil
			f.mu.Unlock()
			np.close()
			return rec, fmt.Errorf("%s (the last checkpoint): %w", StepLoad, err)
		}
		rec.Restored = len(state)
	}
	if err := f.startRings(ctx, np, bases, true); err != nil {
		np.close()
		return rec, fmt.Errorf("%s: %w", StepRings, err)
	}
	f.be = np
	f.announced = false // a fresh back end, with the VM's features
	rec.Bases = bases
	n, err := f.answerOutstanding(ctx)
	rec.Answered = n
	if err != nil {
		f.be.close()
		return rec, err
	}
	return rec, nil
}

// usedIndexes reads, for each started ring, the used index the guest's
// driver sees: where the dead virtiofsd's completed requests end. With
// requests completed in order, every request before it was answered and
// none after it was, so a fresh virtiofsd restarts there.
func (f *Front) usedIndexes() (map[uint32]uint32, error) {
	s := f.setup
	bases := map[uint32]uint32{}
	for _, i := range s.ringIndexes() {
		r := s.rings[i]
		if !r.started {
			continue
		}
		if !r.hasAddr {
			return nil, fmt.Errorf("ring %d was started without an address (SET_VRING_ADDR), so its used index cannot be read", i)
		}
		idx, err := usedIndex(s.regions, r.addr.Used)
		if err != nil {
			return nil, fmt.Errorf("ring %d: %w", i, err)
		}
		bases[i] = uint32(idx)
	}
	return bases, nil
}

// usedIndex reads a split ring's used->idx (the u16 after used->flags, in
// little endian as VIRTIO_F_VERSION_1 has it) at the front end's address
// used, through the memory region that holds it. It reads the region's fd
// with pread rather than mapping it: the same pages as the guest's, with
// no mapping of guest RAM left in the shim, and hugetlbfs backings work
// too (they refuse a mapping at an offset that is not huge-page aligned).
func usedIndex(regions []region, used uint64) (uint16, error) {
	const idxOffset, idxSize = 2, 2
	for _, r := range regions {
		if used < r.UserAddr || used-r.UserAddr > r.Size || r.Size-(used-r.UserAddr) < idxOffset+idxSize {
			continue
		}
		off := r.MmapOffset + (used - r.UserAddr) + idxOffset
		var b [idxSize]byte
		rc, err := r.file.SyscallConn()
		if err != nil {
			return 0, fmt.Errorf("read the used index: %w", err)
		}
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) { n, rerr = unix.Pread(int(fd), b[:], int64(off)) }); err != nil {
			return 0, fmt.Errorf("read the used index: %w", err)
		}
		if rerr != nil {
			return 0, fmt.Errorf("read the used index at offset %#x of the guest's memory: %w", off, rerr)
		}
		if n != idxSize {
			return 0, fmt.Errorf("read the used index at offset %#x of the guest's memory: short read (%d bytes)", off, n)
		}
		return binary.LittleEndian.Uint16(b[:]), nil
	}
	return 0, fmt.Errorf("its used ring at %#x is in none of the %d memory regions the VM gave", used, len(regions))
}

// replayedRequests are those whose effect is in the recorded setup, so a
// fresh back end has it once the setup is replayed: the front acks them
// itself.
func replayedRequest(r vhostuser.Request) bool {
	switch r {
	case vhostuser.SetFeatures, vhostuser.SetProtocolFeatures, vhostuser.SetOwner, vhostuser.ResetOwner,
		vhostuser.ResetDevice, vhostuser.SetMemTable, vhostuser.AddMemReg, vhostuser.RemMemReg,
		vhostuser.SetBackendReqFD, vhostuser.SetVringNum, vhostuser.SetVringBase, vhostuser.SetVringEnable,
		vhostuser.SetVringAddr, vhostuser.SetVringKick, vhostuser.SetVringCall, vhostuser.SetVringErr:
		return true
	}
	return false
}

// answerOutstanding answers, in order, the VM's requests the dead back end
// never answered (QEMU waits for each holding its global lock): a request
// whose effect the replay gave the fresh back end is acked; a question
// that carries no fd (GET_FEATURES, GET_VRING_BASE, ...) is asked again of
// the fresh back end, whose reply goes to the VM as any other; anything
// else (a state transfer's steps, a log base) is failed.
func (f *Front) answerOutstanding(ctx context.Context) (int, error) {
	n := 0
	for len(f.outstanding) > 0 {
		req := f.outstanding[0]
		spec, known := vhostuser.Lookup(req.Request)
		var reply *vhostuser.Message
		switch {
		case known && spec.Reply == vhostuser.ReplyAlways && spec.FDs.Max == 0 && spec.ReplyFDs.Max == 0 &&
			req.Request != vhostuser.CheckDeviceState:
			m, err := f.be.call(ctx, req.Request, req.Payload, nil, false)
			if err != nil {
				return n, fmt.Errorf("ask the fresh virtiofsd again the VM's %s: %w", req.Request, err)
			}
			reply = m
			f.mu.Lock()
			f.setup.recordReply(req, m)
			f.mu.Unlock()
		case req.Request == vhostuser.SetDeviceStateFD:
			reply = ownReply(req.Request, vhostuser.DeviceStateReply{Error: 1, NoFD: true}.Bytes())
		case known && spec.Reply != vhostuser.ReplyAlways && replayedRequest(req.Request):
			reply = ownReply(req.Request, vhostuser.U64(0).Bytes())
		default:
			reply = ownReply(req.Request, vhostuser.U64(1).Bytes())
		}
		f.outstanding = f.outstanding[1:]
		req.Close()
		err := f.vm.conn.WriteMessage(reply)
		reply.Close()
		if err != nil {
			// The VM has gone: Run sees its hang-up next.
			return n, nil
		}
		n++
	}
	return n, nil
}

// ownReply is a reply the front makes itself.
func ownReply(req vhostuser.Request, payload []byte) *vhostuser.Message {
	return &vhostuser.Message{
		Header:  vhostuser.Header{Request: req, Flags: vhostuser.FlagVersion | vhostuser.FlagReply, Size: uint32(len(payload))},
		Payload: payload,
	}
}

// Checkpoint saves virtiofsd's state without moving the session: the
// swap's freeze and SAVE on the serving virtiofsd, which then gets its
// rings back. With Config.RestoreCheckpoint, a recovery loads the last
// checkpoint into the fresh virtiofsd, so that the FUSE session, and the
// inodes and handles known at the checkpoint, go on.
//
// Taking one is safe (the guest pauses for the freeze: about 9 ms with a
// small state, measured); loading one is not, see
// Config.RestoreCheckpoint. The result's Pause is the guest's pause.
func (f *Front) Checkpoint(ctx context.Context) (SwapResult, error) {
	req := swapRequest{ctx: ctx, op: opCheckpoint, done: make(chan swapResponse, 1)}
	select {
	case f.swaps <- req:
	case <-f.ended:
		return SwapResult{}, &SwapError{Step: StepCheck, Err: errors.New("the session has ended")}
	case <-ctx.Done():
		return SwapResult{}, &SwapError{Step: StepCheck, Err: ctx.Err(), Kept: true}
	}
	r := <-req.done
	return r.res, r.err
}

// checkpoint runs in Run's loop with nothing outstanding and the VM held.
func (f *Front) checkpoint(ctx context.Context) (SwapResult, error) {
	if err := f.checkSwappable(); err != nil {
		return SwapResult{}, err
	}
	start := f.cfg.Now()
	res, stopped, state, err := f.freezeAndSave(ctx)
	if err != nil {
		return res, err
	}
	if err := f.giveBack(ctx, stopped); err != nil {
		return res, &SwapError{Step: StepRings, Err: err}
	}
	res.Pause = f.cfg.Now().Sub(start)
	f.mu.Lock()
	f.checkpointState = state
	f.checkpoints++
	f.mu.Unlock()
	return res, nil
}
