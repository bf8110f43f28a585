package front

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// testTimeout bounds each exchange, so that a broken front fails the test
// instead of hanging it; no assertion depends on it.
const testTimeout = 30 * time.Second

// qemu is the VM's end: a vhostuser.Conn that sends what QEMU 10 sends for
// vhost-user-fs, with its eventfds and guest memory.
type qemu struct {
	t                *testing.T
	conn             *vhostuser.Conn
	mem, backendChan *os.File
	kick, call, err  [2]*os.File
	// protocol is what realize sets: QEMU 10's unless a test says.
	protocol uint64
}

// session starts a Front between a fake QEMU and a fake virtiofsd, and
// runs it until the test ends.
func session(t *testing.T, old *fakeBackend, oldConn *net.UnixConn) (*qemu, *Front, <-chan error) {
	t.Helper()
	return sessionWith(t, old, oldConn, Config{})
}

// sessionWith is session with the Front's config.
func sessionWith(t *testing.T, old *fakeBackend, oldConn *net.UnixConn, cfg Config) (*qemu, *Front, <-chan error) {
	t.Helper()
	vmEnd, frontEnd := socketPair(t)
	f := New(frontEnd, oldConn, cfg)
	ran := run(t, f)
	old.start()
	q := &qemu{t: t, conn: vhostuser.NewConn(vmEnd), mem: memFD(t), backendChan: newEventFD(t), protocol: qemuProtocol}
	for i := range 2 {
		q.kick[i], q.call[i], q.err[i] = newEventFD(t), newEventFD(t), newEventFD(t)
	}
	t.Cleanup(func() { q.conn.Close() })
	return q, f, ran
}

// run runs f until the test ends; its result comes on the channel.
func run(t *testing.T, f *Front) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran, ended := make(chan error, 1), make(chan struct{})
	go func() {
		ran <- f.Run(ctx)
		close(ended)
	}()
	t.Cleanup(func() {
		cancel()
		<-ended
	})
	return ran
}

// send sends one request as QEMU does and returns the reply's payload, or
// nil when none is due.
func (q *qemu) send(req vhostuser.Request, payload []byte, needReply bool, files ...*os.File) []byte {
	q.t.Helper()
	r, err := q.conn.Call(req, payload, files, needReply)
	require.NoError(q.t, err, "QEMU's %s", req)
	if req == vhostuser.SetProtocolFeatures {
		v, _ := vhostuser.ParseU64(payload)
		q.conn.SetProtocolFeatures(uint64(v))
	}
	if r == nil {
		return nil
	}
	defer r.Close()
	return r.Payload
}

func (q *qemu) vringFD(req vhostuser.Request, i int, f *os.File) {
	q.send(req, vhostuser.VringFD{Index: uint8(i)}.Bytes(), false, f)
}

func state(i, n uint32) []byte { return vhostuser.VringState{Index: i, Num: n}.Bytes() }

// region is the guest's one memory region.
var guestRAM = vhostuser.MemRegion{GuestAddr: 0, Size: 1 << 20, UserAddr: 0x7f0000000000, MmapOffset: 0}

// realize sends what QEMU 10 sends when it creates the device, with
// q.protocol as its protocol features.
func (q *qemu) realize() {
	q.send(vhostuser.GetFeatures, nil, false)
	q.send(vhostuser.GetProtocolFeatures, nil, false)
	q.send(vhostuser.SetProtocolFeatures, vhostuser.U64(q.protocol).Bytes(), false)
	q.send(vhostuser.GetQueueNum, nil, false)
	q.send(vhostuser.GetMaxMemSlots, nil, false)
	q.send(vhostuser.SetBackendReqFD, nil, true, q.backendChan)
	q.send(vhostuser.SetOwner, nil, false)
	q.send(vhostuser.GetFeatures, nil, false)
	for i := range 2 {
		q.vringFD(vhostuser.SetVringCall, i, q.call[i])
		q.vringFD(vhostuser.SetVringErr, i, q.err[i])
	}
	q.send(vhostuser.ResetDevice, nil, false)
}

// usedAddr is where ring i's used ring is, in QEMU's address space (in
// guestRAM).
func usedAddr(i uint32) uint64 { return guestRAM.UserAddr + 0x10000*uint64(i+1) }

// startDriver sends what QEMU 10 sends when the guest's driver starts;
// with memory, the ADD_MEM_REG it sends only the first time.
func (q *qemu) startDriver(memory bool) {
	q.send(vhostuser.ResetDevice, nil, false)
	for i := range 2 {
		q.vringFD(vhostuser.SetVringCall, i, q.call[i])
	}
	q.send(vhostuser.SetFeatures, vhostuser.U64(qemuFeatures).Bytes(), false)
	if memory {
		q.send(vhostuser.AddMemReg, vhostuser.SingleMemRegion{MemRegion: guestRAM}.Bytes(), true, q.mem)
	}
	for i := range uint32(2) {
		q.send(vhostuser.SetVringNum, state(i, 1024), false)
		q.send(vhostuser.SetVringBase, state(i, 0), false)
		q.send(vhostuser.SetVringAddr, vhostuser.VringAddr{Index: i, Desc: 0x1000 * uint64(i+1), Used: usedAddr(i), Avail: 0x3000}.Bytes(), false)
		q.vringFD(vhostuser.SetVringKick, int(i), q.kick[i])
	}
	for i := range uint32(2) {
		q.send(vhostuser.SetVringEnable, state(i, 1), true)
	}
	for i := range 2 {
		q.vringFD(vhostuser.SetVringCall, i, q.call[i])
	}
	q.roundTrip()
}

// roundTrip asks virtiofsd something: once the answer is in, it has got
// every request sent before (the test's sync point, not QEMU's).
func (q *qemu) roundTrip() { q.send(vhostuser.GetFeatures, nil, false) }

// resetGuest sends what QEMU 10 sends when the guest resets.
func (q *qemu) resetGuest() {
	for i := range uint32(2) {
		q.send(vhostuser.SetVringEnable, state(i, 0), true)
	}
	for i := range uint32(2) {
		q.send(vhostuser.GetVringBase, state(i, 0), false)
	}
	for i := range 2 {
		q.vringFD(vhostuser.SetVringCall, i, q.call[i])
	}
	q.send(vhostuser.ResetDevice, nil, false)
}

// requireKept requires a swap that failed at step and left the session
// with the old virtiofsd.
func requireKept(t *testing.T, err error, step Step) {
	t.Helper()
	var se *SwapError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, step, se.Step, "%v", err)
	assert.True(t, se.Kept, "the old virtiofsd keeps the session: %v", err)
}

// running is a session whose guest driver has started, and how many
// requests its virtiofsd got so far.
func running(t *testing.T) (*qemu, *Front, *fakeBackend, int) {
	t.Helper()
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	return q, f, old, len(old.Log())
}

func swapTo(t *testing.T, f *Front, conn *net.UnixConn) (SwapResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return f.Swap(ctx, conn)
}

func TestRelaysRequestsRepliesAndTheirFdsBothWays(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, _, _ := session(t, old, oldConn)

	got := q.send(vhostuser.GetFeatures, nil, false)
	v, err := vhostuser.ParseU64(got)
	require.NoError(t, err)
	assert.Equal(t, vhostuser.U64(virtiofsdFeatures), v, "QEMU gets virtiofsd's answer")

	q.send(vhostuser.SetProtocolFeatures, vhostuser.U64(qemuProtocol).Bytes(), false)
	q.send(vhostuser.AddMemReg, vhostuser.SingleMemRegion{MemRegion: guestRAM}.Bytes(), true, q.mem)
	q.vringFD(vhostuser.SetVringKick, 0, q.kick[0])

	mem := old.Files(vhostuser.AddMemReg)
	require.Len(t, mem, 1)
	assert.Equal(t, inode(t, q.mem), inode(t, mem[0]), "virtiofsd maps QEMU's own memfd")
	require.Eventually(t, func() bool { return len(old.Files(vhostuser.SetVringKick)) == 1 }, testTimeout, time.Millisecond)
	assert.Equal(t, inode(t, q.kick[0]), inode(t, old.Files(vhostuser.SetVringKick)[0]), "virtiofsd gets QEMU's kick eventfd")
	assert.Equal(t, []string{"GET_FEATURES", "SET_PROTOCOL_FEATURES", "ADD_MEM_REG", "SET_VRING_KICK 0"}, old.Log())
}

func TestRecordsTheSetupAndKeepsTheMemoryAcrossAGuestReset(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	q.resetGuest()
	q.startDriver(false) // QEMU does not send ADD_MEM_REG again

	st := f.Status()
	assert.True(t, st.Swappable, st.Reason)
	assert.Equal(t, uint64(qemuFeatures), st.Setup.Features)
	assert.Equal(t, uint64(qemuProtocol), st.Setup.ProtocolFeatures)
	assert.True(t, st.Setup.Owner)
	assert.True(t, st.Setup.BackendChannel)
	assert.Equal(t, []vhostuser.MemRegion{guestRAM}, st.Setup.Regions, "the region survives the reset")
	require.Len(t, st.Setup.Rings, 2)
	for i, r := range st.Setup.Rings {
		assert.Equal(t, uint32(i), r.Index)
		assert.Equal(t, uint32(1024), r.Num)
		assert.Equal(t, uint64(0x1000*(i+1)), r.Addr.Desc)
		assert.True(t, r.Kick && r.Call && r.Err && r.Started && r.Enabled, "ring %d: %+v", i, r)
	}

	// The new virtiofsd gets the memory although QEMU sent it only once.
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	require.NoError(t, err)
	assert.Contains(t, fresh.Log(), "ADD_MEM_REG")
	mem := fresh.Files(vhostuser.AddMemReg)
	require.Len(t, mem, 1)
	assert.Equal(t, inode(t, q.mem), inode(t, mem[0]))
}

func TestSwapMovesTheSessionInTheOrderThatDoesNotHangVirtiofsd(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.state = []byte("inodes and handles")
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	before := len(old.Log())

	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	res, err := swapTo(t, f, freshConn)
	require.NoError(t, err)

	assert.Equal(t, []string{
		"SET_VRING_ENABLE 0 0", "SET_VRING_ENABLE 1 0",
		"GET_VRING_BASE 0", "GET_VRING_BASE 1",
		"SET_DEVICE_STATE_FD save", "CHECK_DEVICE_STATE",
	}, old.Log()[before:], "the old virtiofsd is stopped, then saved")
	assert.Equal(t, loadedAndStarted, fresh.Log(), "the new virtiofsd is set up, loaded, and its rings start where the old ones stopped")
	assert.Equal(t, "inodes and handles", string(fresh.Loaded()), "the state moved")
	assert.Equal(t, len("inodes and handles"), res.StateSize)
	assert.Positive(t, res.Pause)
	for i := range 2 {
		assert.Equal(t, uint64(1), eventCount(t, q.kick[i]), "ring %d is kicked once after the swap", i)
	}
	assert.Equal(t, inode(t, q.backendChan), inode(t, fresh.Files(vhostuser.SetBackendReqFD)[0]), "the new virtiofsd gets QEMU's back-end channel")

	// The session goes on with the new virtiofsd.
	q.send(vhostuser.GetStatus, nil, false)
	assert.Equal(t, "GET_STATUS", fresh.Log()[len(fresh.Log())-1])
	assert.NotContains(t, old.Log(), "GET_STATUS")
	assert.Equal(t, 1, f.Status().Swaps)
}

func TestSwapBeforeTheGuestsDriverStartsSetsUpNoRingItCannotEnable(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.realize() // QEMU connected at boot; the guest has not mounted yet

	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	require.NoError(t, err)
	assert.NotContains(t, strings.Join(fresh.Log(), ","), "SET_VRING_ENABLE", "no ring is enabled or disabled before SET_FEATURES")

	// The guest's driver then starts on the new virtiofsd.
	q.startDriver(true)
	assert.Contains(t, fresh.Log(), "SET_VRING_ENABLE 0 1")
	assert.Equal(t, 1, f.Status().Swaps)
}

func TestSwapGivesTheRingsBackWhenTheNewVirtiofsdRefusesTheState(t *testing.T) {
	q, f, old, before := running(t)

	fresh, freshConn := newFakeBackend(t)
	fresh.failLoad = true
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	requireKept(t, err, StepLoad)

	assert.Equal(t, []string{
		"SET_VRING_ENABLE 0 0", "SET_VRING_ENABLE 1 0", "GET_VRING_BASE 0", "GET_VRING_BASE 1",
		"SET_DEVICE_STATE_FD save", "CHECK_DEVICE_STATE",
		"SET_VRING_ENABLE 0 0", "SET_VRING_NUM 0 1024", "SET_VRING_ADDR 0", "SET_VRING_BASE 0 17", "SET_VRING_CALL 0", "SET_VRING_ERR 0",
		"SET_VRING_ENABLE 1 0", "SET_VRING_NUM 1 1024", "SET_VRING_ADDR 1", "SET_VRING_BASE 1 42", "SET_VRING_CALL 1", "SET_VRING_ERR 1",
		"SET_VRING_KICK 0", "SET_VRING_KICK 1", "SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1",
	}, old.Log()[before:], "the old virtiofsd gets its rings back where they stopped, kick fds while disabled")
	for i := range 2 {
		assert.Equal(t, uint64(1), eventCount(t, q.kick[i]), "ring %d is kicked again", i)
	}
	q.send(vhostuser.GetStatus, nil, false)
	assert.Equal(t, "GET_STATUS", old.Log()[len(old.Log())-1], "the session goes on with the old virtiofsd")
	assert.Equal(t, 0, f.Status().Swaps)
}

func TestSwapRefusesAVirtiofsdThatLacksANegotiatedFeature(t *testing.T) {
	q, f, old, before := running(t)

	for name, lack := range map[string]func(b *fakeBackend){
		"EVENT_IDX":    func(b *fakeBackend) { b.features &^= vhostuser.FeatureEventIdx },
		"DEVICE_STATE": func(b *fakeBackend) { b.protocol &^= vhostuser.ProtoDeviceState },
	} {
		t.Run(name, func(t *testing.T) {
			fresh, freshConn := newFakeBackend(t)
			lack(fresh)
			fresh.start()
			_, err := swapTo(t, f, freshConn)
			requireKept(t, err, StepPrepare)
			assert.ErrorContains(t, err, "lacks")
		})
	}
	assert.Empty(t, old.Log()[before:], "the old virtiofsd was never stopped")
	q.send(vhostuser.GetStatus, nil, false)
	assert.Equal(t, "GET_STATUS", old.Log()[len(old.Log())-1])
}

// replyDue is a running session in which QEMU has asked GET_STATUS and
// virtiofsd holds its answer until old.release is closed.
func replyDue(t *testing.T) (*qemu, *Front, *fakeBackend, <-chan error) {
	t.Helper()
	old, oldConn := newFakeBackend(t)
	old.hold = vhostuser.GetStatus
	q, f, ran := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	require.NoError(t, q.conn.WriteMessage(&vhostuser.Message{Header: vhostuser.Header{Request: vhostuser.GetStatus, Flags: vhostuser.FlagVersion}}))
	waitFor(t, old.received, "GET_STATUS")
	return q, f, old, ran
}

func TestSwapWaitsForTheRepliesQEMUWaitsFor(t *testing.T) {
	// QEMU asks; virtiofsd has not answered when the swap is asked for.
	q, f, old, _ := replyDue(t)
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req := swapRequest{ctx: ctx, backend: freshConn, done: make(chan swapResponse, 1)}
	f.swaps <- req // what Swap does; it returns once Run holds the request
	swapped := make(chan error, 1)
	go func() { swapped <- (<-req.done).err }()
	// A request QEMU sends meanwhile is held, not lost.
	q.send(vhostuser.SetVringCall, vhostuser.VringFD{Index: 0}.Bytes(), false, q.call[0])
	select {
	case err := <-swapped:
		t.Fatalf("the swap ran while QEMU waited for a reply: %v", err)
	case <-time.After(100 * time.Millisecond): // a window for a wrong swap to show
	}
	assert.NotContains(t, old.Log(), "SET_VRING_ENABLE 0 0", "the old virtiofsd is not stopped while a reply is due")

	close(old.release)
	r, err := q.conn.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, vhostuser.GetStatus, r.Request, "QEMU gets its reply")
	r.Close()
	require.NoError(t, <-swapped)
	calls := count(old.Log(), "SET_VRING_CALL 0")
	require.Eventually(t, func() bool { return count(fresh.Log(), "SET_VRING_CALL 0") == 2 }, testTimeout, time.Millisecond,
		"the held request goes to the new virtiofsd, after the swap's own")
	assert.Equal(t, calls, count(old.Log(), "SET_VRING_CALL 0"), "and not to the old one")
}

func count(log []string, entry string) int {
	n := 0
	for _, e := range log {
		if e == entry {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, c <-chan string, want string) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case got := <-c:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("the back end never got %s", want)
		}
	}
}

func TestAnUnknownRequestIsPassedOnAndMakesTheSessionUnswappable(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)

	unknown := vhostuser.Request(99)
	q.send(unknown, []byte{1, 2, 3, 4}, false)
	waitFor(t, old.received, "REQUEST(99)")

	st := f.Status()
	assert.Equal(t, 1, st.UnknownRequests)
	assert.False(t, st.Swappable)
	assert.Contains(t, st.Reason, "REQUEST(99)")

	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	requireKept(t, err, StepCheck)
	assert.ErrorContains(t, err, "REQUEST(99)")
	assert.Empty(t, fresh.Log(), "the new virtiofsd was not touched")
}

func TestAPackedRingMakesTheSessionUnswappable(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.send(vhostuser.SetFeatures, vhostuser.U64(qemuFeatures|vhostuser.FeatureRingPacked).Bytes(), false)
	q.send(vhostuser.GetFeatures, nil, false) // a round trip: the front has seen SET_FEATURES

	st := f.Status()
	assert.False(t, st.Swappable)
	assert.Contains(t, st.Reason, "packed ring")
}

func TestRunEndsCleanlyWhenQEMUHangsUpAndReportsADeadVirtiofsd(t *testing.T) {
	t.Run("QEMU hangs up", func(t *testing.T) {
		old, oldConn := newFakeBackend(t)
		q, _, ran := session(t, old, oldConn)
		q.realize()
		q.conn.Close()
		assert.NoError(t, <-ran)
	})
	t.Run("virtiofsd dies", func(t *testing.T) {
		old, oldConn := newFakeBackend(t)
		q, _, ran := session(t, old, oldConn)
		q.realize()
		old.stop()
		assert.True(t, errors.Is(<-ran, ErrBackendGone))
	})
}

func TestASwapGivesUpWhenTheRepliesQEMUWaitsForNeverCome(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	q, old, fresh, req := swapWhileAReplyIsDue(t, ctx)
	cancel() // the caller gives up
	requireKept(t, (<-req.done).err, StepCheck)

	close(old.release)
	r, err := q.conn.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, vhostuser.GetStatus, r.Request, "the session goes on: QEMU gets its reply")
	r.Close()
	q.roundTrip()
	assert.Empty(t, fresh.Log(), "the new virtiofsd was not touched")
}

// swapWhileAReplyIsDue asks for a swap (as Swap does, returning once
// Run holds the request) while QEMU waits for virtiofsd's answer to
// GET_STATUS, which the fake holds until old.release is closed.
func swapWhileAReplyIsDue(t *testing.T, ctx context.Context) (*qemu, *fakeBackend, *fakeBackend, swapRequest) {
	t.Helper()
	old, oldConn := newFakeBackend(t)
	old.hold = vhostuser.GetStatus
	q, f, _ := session(t, old, oldConn)
	q.realize()
	require.NoError(t, q.conn.WriteMessage(&vhostuser.Message{Header: vhostuser.Header{Request: vhostuser.GetStatus, Flags: vhostuser.FlagVersion}}))
	waitFor(t, old.received, "GET_STATUS")
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	req := swapRequest{ctx: ctx, backend: freshConn, done: make(chan swapResponse, 1)}
	f.swaps <- req
	return q, old, fresh, req
}

func TestASwapWaitingOnAVirtiofsdThatDiesFailsInsteadOfHanging(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, old, fresh, req := swapWhileAReplyIsDue(t, ctx)

	old.conn.Close() // virtiofsd dies before it answers
	close(old.release)
	err := (<-req.done).err
	var se *SwapError
	require.ErrorAs(t, err, &se)
	assert.False(t, se.Kept, "nothing serves the session any more: %v", err)
	assert.Empty(t, fresh.Log(), "the new virtiofsd was not touched")
}

func TestAMalformedRequestFromTheVMEndsTheSessionWithAProtocolError(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, _, ran := session(t, old, oldConn)
	q.realize()
	// SET_VRING_KICK with two fds: the table allows at most one.
	require.NoError(t, q.conn.WriteMessage(&vhostuser.Message{
		Header:  vhostuser.Header{Request: vhostuser.SetVringKick, Flags: vhostuser.FlagVersion},
		Payload: vhostuser.VringFD{Index: 0}.Bytes(), Files: []*os.File{q.kick[0], q.kick[1]},
	}))
	var pe *vhostuser.ProtocolError
	require.ErrorAs(t, <-ran, &pe)
	assert.Equal(t, vhostuser.SetVringKick, pe.Request)
	assert.NotContains(t, old.Log(), "SET_VRING_KICK 0", "it is not passed on")
}

func TestASessionWithASwapLeavesNoFdOpen(t *testing.T) {
	before := openFDs(t)
	old, oldConn := newFakeBackend(t)
	q, f, ran := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	require.NoError(t, err)
	q.conn.Close()
	require.NoError(t, <-ran)
	old.stop()
	fresh.stop()
	q.closeFiles()
	assert.Equal(t, before, openFDs(t), "every fd the front duplicated or received is closed")
}

// closeFiles closes QEMU's own memory and eventfds.
func (q *qemu) closeFiles() {
	for _, files := range [][]*os.File{{q.mem, q.backendChan}, q.kick[:], q.call[:], q.err[:]} {
		for _, file := range files {
			file.Close()
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// loadedAndStarted is what a fresh virtiofsd is sent when a session moves
// onto it, by a swap or by a restart's resume (DESIGN.md's order): the
// recorded setup, the state loaded, then each ring set up disabled where
// it stopped (bases 17 and 42), every kick fd while still disabled, and
// only then the enables.
var loadedAndStarted = []string{
	"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER",
	"SET_BACKEND_REQ_FD", "SET_FEATURES", "ADD_MEM_REG",
	"SET_DEVICE_STATE_FD load", "CHECK_DEVICE_STATE",
	"SET_VRING_ENABLE 0 0", "SET_VRING_NUM 0 1024", "SET_VRING_ADDR 0", "SET_VRING_BASE 0 17", "SET_VRING_CALL 0", "SET_VRING_ERR 0",
	"SET_VRING_ENABLE 1 0", "SET_VRING_NUM 1 1024", "SET_VRING_ADDR 1", "SET_VRING_BASE 1 42", "SET_VRING_CALL 1", "SET_VRING_ERR 1",
	"SET_VRING_KICK 0", "SET_VRING_KICK 1",
	"SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1",
}

// The service keeps the state's movable record current from what the
// front tells it: not swappable until the state transfer is negotiated,
// then swappable, not while a live migration logs, and never again once
// an unknown request passed.
func TestTheFrontTellsEachChangeOfWhetherTheSessionCanBeSwapped(t *testing.T) {
	type verdict struct {
		ok     bool
		reason string
	}
	told := make(chan verdict, 16)
	old, oldConn := newFakeBackend(t)
	q, _, _ := sessionWith(t, old, oldConn, Config{Swappable: func(ok bool, reason string) { told <- verdict{ok, reason} }})
	next := func() verdict {
		t.Helper()
		select {
		case v := <-told:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("the front told nothing")
		}
		return verdict{}
	}
	v := next()
	assert.False(t, v.ok)
	assert.Contains(t, v.reason, "REPLY_ACK", "nothing negotiated yet")
	q.realize()
	assert.Equal(t, verdict{true, ""}, next())
	q.startDriver(true)

	q.send(vhostuser.SetFeatures, vhostuser.U64(qemuFeatures|vhostuser.FeatureLogAll).Bytes(), false)
	v = next()
	assert.False(t, v.ok)
	assert.Contains(t, v.reason, "a live migration is under way")
	q.send(vhostuser.SetFeatures, vhostuser.U64(qemuFeatures).Bytes(), false)
	assert.Equal(t, verdict{true, ""}, next(), "the migration ended")

	q.send(vhostuser.Request(99), []byte{1, 2, 3, 4}, false)
	v = next()
	assert.False(t, v.ok)
	assert.Contains(t, v.reason, "REQUEST(99)")
	q.roundTrip()
	select {
	case v := <-told:
		t.Fatalf("told %v though nothing changed", v)
	default:
	}
}

// TestSwapResultSplitsThePauseIntoItsPhases: with a clock that moves one
// millisecond per reading, the record's phases are each read and lie
// within the pause (the bench reports the front's share as the rest).
func TestSwapResultSplitsThePauseIntoItsPhases(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.state = []byte("inodes and handles")
	var mu sync.Mutex
	clock := time.Unix(0, 0)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Millisecond)
		return clock
	}
	q, f, _ := sessionWith(t, old, oldConn, Config{Now: now})
	q.realize()
	q.startDriver(true)

	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	res, err := swapTo(t, f, freshConn)
	require.NoError(t, err)
	assert.Positive(t, res.Freeze, "the freeze is timed")
	assert.Positive(t, res.Save, "the save is timed")
	assert.Positive(t, res.Load, "the load is timed")
	assert.Greater(t, res.Pause, res.Freeze+res.Save+res.Load, "the phases lie within the pause, the rings' start after them")
}

// TestAVMThatCameInByALiveMigrationCanBeSwapped: a destination's QEMU loads
// the migrated state into virtiofsd through the front (SET_DEVICE_STATE_FD,
// then CHECK_DEVICE_STATE). That state is virtiofsd's own from then on, so
// the session stays swappable, and a reload moves what virtiofsd holds now.
func TestAVMThatCameInByALiveMigrationCanBeSwapped(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.state = []byte("the state after the migration")
	q, f, _ := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)

	r, w, err := statePipe(false) // the end QEMU gives virtiofsd is blocking, as statePipe makes it
	require.NoError(t, err)
	_, err = w.WriteString("the state from the source")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	q.send(vhostuser.SetDeviceStateFD, vhostuser.DeviceStateFD{Direction: vhostuser.DirectionLoad, Phase: vhostuser.PhaseStopped}.Bytes(), false, r)
	require.NoError(t, r.Close())
	q.send(vhostuser.CheckDeviceState, nil, false)
	assert.Equal(t, "the state from the source", string(old.Loaded()), "the migration's state reached virtiofsd")

	st := f.Status()
	assert.True(t, st.Swappable, "reason: %s", st.Reason)

	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err = swapTo(t, f, freshConn)
	require.NoError(t, err)
	assert.Equal(t, "the state after the migration", string(fresh.Loaded()), "the swap moves what virtiofsd holds now")
}
