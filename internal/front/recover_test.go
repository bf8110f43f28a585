package front

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// respawner hands Run fresh fake virtiofsds, one per crash, and then
// refuses (the caller's bound).
type respawner struct {
	t      *testing.T
	fresh  chan *net.UnixConn
	causes chan error
}

func newRespawner(t *testing.T) *respawner {
	return &respawner{t: t, fresh: make(chan *net.UnixConn, 8), causes: make(chan error, 8)}
}

// add prepares the next fresh virtiofsd.
func (r *respawner) add() *fakeBackend {
	b, conn := newFakeBackend(r.t)
	b.start()
	r.fresh <- conn
	return b
}

func (r *respawner) respawn(_ context.Context, cause error) (*net.UnixConn, error) {
	r.causes <- cause
	select {
	case c := <-r.fresh:
		return c, nil
	default:
		return nil, errors.New("too many crashes: the caller gives up")
	}
}

// writeUsedIndex writes ring i's used->idx into the guest's memory, as
// the guest's driver sees it when virtiofsd has completed n requests.
func (q *qemu) writeUsedIndex(i uint32, n uint16) {
	q.t.Helper()
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], n)
	_, err := q.mem.WriteAt(b[:], int64(usedAddr(i)-guestRAM.UserAddr+guestRAM.MmapOffset+2))
	require.NoError(q.t, err)
}

// kill ends a fake virtiofsd as kill -9 does: its connection closes,
// with whatever it was about to answer unanswered.
func (b *fakeBackend) kill() {
	b.conn.Close()
	if b.hold != 0 {
		close(b.release)
	}
	b.stop()
}

func TestAfterVirtiofsdDiesAFreshOneGetsTheSetupAndTheRingsRestartAtTheGuestsUsedIndex(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	r := newRespawner(t)
	told := make(chan Recovery, 4)
	q, f, ran := sessionWith(t, old, oldConn, Config{Respawn: r.respawn, Recovered: func(rec Recovery) { told <- rec }})
	q.realize()
	q.startDriver(true)
	assert.True(t, f.Status().Recoverable, f.Status().RecoveryReason)
	assert.False(t, f.Status().Degraded)
	for i := range 2 {
		eventCount(t, q.kick[i]) // the guest's own kicks so far
	}

	q.writeUsedIndex(0, 1000)
	q.writeUsedIndex(1, 65535)
	fresh := r.add()
	old.kill()
	q.roundTrip() // answered by the fresh virtiofsd

	assert.ErrorIs(t, <-r.causes, ErrBackendGone, "Respawn is told how the last one ended")
	assert.Equal(t, []string{
		"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER",
		"SET_BACKEND_REQ_FD", "SET_FEATURES", "ADD_MEM_REG",
		"SET_VRING_ENABLE 0 0", "SET_VRING_NUM 0 1024", "SET_VRING_ADDR 0", "SET_VRING_BASE 0 1000", "SET_VRING_CALL 0", "SET_VRING_ERR 0",
		"SET_VRING_ENABLE 1 0", "SET_VRING_NUM 1 1024", "SET_VRING_ADDR 1", "SET_VRING_BASE 1 65535", "SET_VRING_CALL 1", "SET_VRING_ERR 1",
		"SET_VRING_KICK 0", "SET_VRING_KICK 1",
		"SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1",
		"GET_FEATURES",
	}, fresh.Log(), "the setup is replayed, and each ring restarts at the used index the guest sees, kicked while disabled")
	for i := range 2 {
		assert.Equal(t, uint64(1), eventCount(t, q.kick[i]), "ring %d is kicked once after the recovery", i)
	}
	mem := fresh.Files(vhostuser.AddMemReg)
	require.Len(t, mem, 1)
	assert.Equal(t, inode(t, q.mem), inode(t, mem[0]), "the fresh virtiofsd maps the guest's own memory")
	assert.Equal(t, inode(t, q.backendChan), inode(t, fresh.Files(vhostuser.SetBackendReqFD)[0]))

	// The fresh virtiofsd answers the VM before the recovery is counted.
	require.Eventually(t, func() bool { return f.Status().Recoveries == 1 }, testTimeout, time.Millisecond)
	st := f.Status()
	assert.True(t, st.Degraded, "the session goes on degraded")
	assert.Equal(t, 1, st.Recoveries)
	assert.Equal(t, map[uint32]uint32{0: 1000, 1: 65535}, st.LastRecovery.Bases)
	assert.ErrorIs(t, st.LastRecovery.Cause, ErrBackendGone)
	require.Len(t, told, 1, "the caller is told of the recovery")
	assert.Equal(t, st.LastRecovery.Bases, (<-told).Bases)

	// A second crash; then the caller gives up, and the VM is let go.
	second := r.add()
	fresh.kill()
	q.roundTrip()
	assert.Contains(t, second.Log(), "SET_VRING_BASE 0 1000")
	assert.Eventually(t, func() bool { return f.Status().Recoveries == 2 }, testTimeout, time.Millisecond)
	second.kill()
	err := <-ran
	var re *RecoveryError
	require.ErrorAs(t, err, &re)
	assert.ErrorIs(t, err, ErrBackendGone)
	assert.Contains(t, err.Error(), "the caller gives up")
	_, err = q.conn.ReadMessage()
	assert.Error(t, err, "QEMU's connection is closed: it is not left waiting")
}

func TestRequestsTheDeadVirtiofsdNeverAnsweredAreAnswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     vhostuser.Request
		payload []byte
		files   bool
		want    []byte
	}{
		{"a question is asked again of the fresh virtiofsd", vhostuser.GetStatus, nil, false, vhostuser.U64(0xf).Bytes()},
		{"a setup step the replay gave the fresh one is acked", vhostuser.AddMemReg, vhostuser.SingleMemRegion{MemRegion: guestRAM}.Bytes(), true, vhostuser.U64(0).Bytes()},
		{"a state transfer is failed", vhostuser.CheckDeviceState, nil, false, vhostuser.U64(1).Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, oldConn := newFakeBackend(t)
			old.hold = tc.req
			r := newRespawner(t)
			q, f, _ := sessionWith(t, old, oldConn, Config{Respawn: r.respawn})
			q.realize()
			flags := vhostuser.FlagVersion
			var files []*os.File
			if tc.files {
				flags |= vhostuser.FlagNeedReply
				files = append(files, q.mem)
			}
			require.NoError(t, q.conn.WriteMessage(&vhostuser.Message{
				Header:  vhostuser.Header{Request: tc.req, Flags: flags, Size: uint32(len(tc.payload))},
				Payload: tc.payload, Files: files,
			}))
			waitFor(t, old.received, tc.req.String())
			fresh := r.add()
			old.kill()

			reply, err := q.conn.ReadMessage()
			require.NoError(t, err, "QEMU gets an answer")
			defer reply.Close()
			assert.Equal(t, tc.req, reply.Request)
			assert.True(t, reply.IsReply())
			assert.Equal(t, tc.want, reply.Payload)
			q.roundTrip()
			assert.LessOrEqual(t, count(fresh.Log(), tc.req.String()), 1, "nothing is applied twice")
			assert.Equal(t, 1, f.Status().Recoveries)
		})
	}
}

func TestACrashIsNotRecoveredWhenVirtiofsdRunsAThreadPool(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	respawn := func(context.Context, error) (*net.UnixConn, error) {
		t.Error("no fresh virtiofsd is asked for")
		return nil, errors.New("unexpected")
	}
	q, f, ran := sessionWith(t, old, oldConn, Config{Respawn: respawn, ThreadPool: true})
	q.realize()
	q.startDriver(true)
	st := f.Status()
	assert.False(t, st.Recoverable)
	assert.Contains(t, st.RecoveryReason, "thread pool")

	old.kill()
	err := <-ran
	var re *RecoveryError
	require.ErrorAs(t, err, &re)
	assert.ErrorIs(t, err, ErrBackendGone)
	assert.Contains(t, err.Error(), "thread pool", "the error says why")
	_, err = q.conn.ReadMessage()
	assert.Error(t, err, "QEMU's connection is closed: it is not left waiting")
}

func TestAUsedRingOutsideTheGuestsMemoryIsNotRead(t *testing.T) {
	regions := []region{{MemRegion: guestRAM}}
	_, err := usedIndex(regions, guestRAM.UserAddr+guestRAM.Size-2)
	assert.ErrorContains(t, err, "none of the 1 memory regions", "used->idx would end past the region")
	_, err = usedIndex(regions, 0x2000)
	assert.ErrorContains(t, err, "none of the 1 memory regions")
}

func TestACheckpointIsLoadedIntoTheFreshVirtiofsdOnlyWhenAskedFor(t *testing.T) {
	for _, restore := range []bool{false, true} {
		t.Run(map[bool]string{false: "off (the default)", true: "on"}[restore], func(t *testing.T) {
			old, oldConn := newFakeBackend(t)
			old.state = []byte("inodes at the checkpoint")
			r := newRespawner(t)
			q, f, _ := sessionWith(t, old, oldConn, Config{Respawn: r.respawn, RestoreCheckpoint: restore})
			q.realize()
			q.startDriver(true)
			before := len(old.Log())

			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			res, err := f.Checkpoint(ctx)
			require.NoError(t, err)
			assert.Equal(t, len("inodes at the checkpoint"), res.StateSize)
			log := old.Log()[before:]
			assert.Equal(t, []string{"SET_VRING_ENABLE 0 0", "SET_VRING_ENABLE 1 0", "GET_VRING_BASE 0", "GET_VRING_BASE 1",
				"SET_DEVICE_STATE_FD save", "CHECK_DEVICE_STATE"}, log[:6], "the rings are stopped, then the state saved")
			assert.Equal(t, []string{"SET_VRING_KICK 0", "SET_VRING_KICK 1", "SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1"}, log[len(log)-4:],
				"and the same virtiofsd gets its rings back")
			q.roundTrip()
			assert.Equal(t, "GET_FEATURES", old.Log()[len(old.Log())-1], "the session goes on with it")
			assert.Equal(t, 1, f.Status().Checkpoints)

			fresh := r.add()
			old.kill()
			q.roundTrip()
			if restore {
				assert.Equal(t, "inodes at the checkpoint", string(fresh.Loaded()))
				assert.Equal(t, len("inodes at the checkpoint"), f.Status().LastRecovery.Restored)
			} else {
				assert.NotContains(t, fresh.Log(), "SET_DEVICE_STATE_FD load")
				assert.Zero(t, f.Status().LastRecovery.Restored)
			}
		})
	}
}

func TestAVirtiofsdThatDiesDuringASwapIsReplacedByAFreshOne(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.hold = vhostuser.GetVringBase
	r := newRespawner(t)
	q, f, _ := sessionWith(t, old, oldConn, Config{Respawn: r.respawn})
	q.realize()
	q.startDriver(true)
	swapFresh, swapConn := newFakeBackend(t)
	swapFresh.start()
	swapped := make(chan error, 1)
	go func() {
		_, err := swapTo(t, f, swapConn)
		swapped <- err
	}()
	waitFor(t, old.received, "GET_VRING_BASE 0")
	fresh := r.add()
	old.kill()

	var se *SwapError
	require.ErrorAs(t, <-swapped, &se)
	assert.False(t, se.Kept, "the old virtiofsd is gone: %v", se)
	q.roundTrip()
	assert.Equal(t, "GET_FEATURES", fresh.Log()[len(fresh.Log())-1], "a fresh virtiofsd serves the session")
	assert.Contains(t, fresh.Log(), "SET_VRING_BASE 0 0", "its rings restart at the used index")
	assert.Equal(t, 1, f.Status().Recoveries)
}

func TestACrashIsNotRecoveredWhenTheRingsCannotBeFoundInTheGuestsMemory(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	r := newRespawner(t)
	q, _, ran := sessionWith(t, old, oldConn, Config{Respawn: r.respawn})
	q.realize()
	q.startDriver(false) // rings without memory: their used index cannot be read
	old.kill()
	err := <-ran
	var re *RecoveryError
	require.ErrorAs(t, err, &re)
	assert.Contains(t, err.Error(), "none of the 0 memory regions")
	assert.Empty(t, r.causes, "no fresh virtiofsd is started for a session that cannot go on")
}
