package front

import (
	"context"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// memStore is systemd's fd store in memory: it keeps dups of what it is
// sent, by name, and as systemd does it drops a descriptor whose open file
// description it already holds, under any name.
type memStore struct {
	t     *testing.T
	mu    sync.Mutex
	files map[string][]*os.File
}

func newMemStore(t *testing.T) *memStore {
	s := &memStore{t: t, files: map[string][]*os.File{}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		closeStored(s.files)
	})
	return s
}

func (s *memStore) Store(name string, files ...*os.File) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range files {
		if s.holds(f) {
			continue
		}
		d, err := dup(f)
		if err != nil {
			return false, err
		}
		s.files[name] = append(s.files[name], d)
	}
	return true, nil
}

func (s *memStore) holds(f *os.File) bool {
	for _, fs := range s.files {
		for _, g := range fs {
			same, err := sameFile(f, g)
			require.NoError(s.t, err)
			if same {
				return true
			}
		}
	}
	return false
}

func (s *memStore) Remove(name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files[name] {
		f.Close()
	}
	delete(s.files, name)
	return true, nil
}

// names lists what the store holds.
func (s *memStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// passed is what systemd passes the next shim: a dup of each stored
// descriptor, by name.
func (s *memStore) passed() map[string][]*os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]*os.File{}
	for n, fs := range s.files {
		for _, f := range fs {
			d, err := dup(f)
			require.NoError(s.t, err)
			out[n] = append(out[n], d)
		}
	}
	return out
}

// journaled starts a session whose front keeps its crash record in a
// memStore; kill ends that front as kill -9 ends the shim: what the store
// holds at that moment is what the next shim gets.
func journaled(t *testing.T, old *fakeBackend, oldConn *net.UnixConn) (q *qemu, st *memStore, kill func() map[string][]*os.File) {
	t.Helper()
	st = newMemStore(t)
	vmEnd, frontEnd := socketPair(t)
	f := New(frontEnd, oldConn, Config{Respawn: newRespawner(t).respawn, Journal: st})
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		_ = f.Run(ctx)
		close(ended)
	}()
	t.Cleanup(func() {
		cancel()
		<-ended
	})
	old.start()
	q = &qemu{t: t, conn: vhostuser.NewConn(vmEnd), mem: memFD(t), backendChan: newEventFD(t), protocol: qemuProtocol}
	for i := range 2 {
		q.kick[i], q.call[i], q.err[i] = newEventFD(t), newEventFD(t), newEventFD(t)
	}
	t.Cleanup(func() { q.conn.Close() })
	kill = func() map[string][]*os.File {
		stored := st.passed()
		cancel()
		<-ended
		old.kill()
		return stored
	}
	return q, st, kill
}

// resumeAfterKill is the next shim: it loads the record and resumes it on
// a fresh fake virtiofsd.
func resumeAfterKill(t *testing.T, stored map[string][]*os.File) (*Front, *fakeBackend, Recovery, *memStore) {
	t.Helper()
	r, err := LoadCrashRecord(stored)
	require.NoError(t, err)
	require.NotNil(t, r)
	fresh, conn := newFakeBackend(t)
	fresh.start()
	// systemd still holds what it passed.
	st := newMemStore(t)
	for n, fs := range stored {
		for _, f := range fs {
			_, err := st.Store(n, f)
			require.NoError(t, err)
		}
	}
	f, rec, err := ResumeAfterCrash(context.Background(), r, conn, Config{Respawn: newRespawner(t).respawn, Journal: st})
	require.NoError(t, err)
	run(t, f)
	return f, fresh, rec, st
}

func TestAKilledShimLeavesTheSessionForTheNextWhichResumesItOnAFreshVirtiofsd(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, st, kill := journaled(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	names := st.names()
	assert.Contains(t, names, "crash-vm")
	assert.Contains(t, names, "crash-rec-0")
	assert.Contains(t, names, "crash-rec-1")
	q.writeUsedIndex(0, 300)
	q.writeUsedIndex(1, 7)
	stored := kill()
	defer closeStored(stored)

	f, fresh, rec, st2 := resumeAfterKill(t, stored)
	q.roundTrip() // the VM's connection works, answered by the fresh virtiofsd
	assert.Equal(t, []string{
		"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER",
		"SET_BACKEND_REQ_FD", "SET_FEATURES", "ADD_MEM_REG",
		"SET_VRING_ENABLE 0 0", "SET_VRING_NUM 0 1024", "SET_VRING_ADDR 0", "SET_VRING_BASE 0 300", "SET_VRING_CALL 0", "SET_VRING_ERR 0",
		"SET_VRING_ENABLE 1 0", "SET_VRING_NUM 1 1024", "SET_VRING_ADDR 1", "SET_VRING_BASE 1 7", "SET_VRING_CALL 1", "SET_VRING_ERR 1",
		"SET_VRING_KICK 0", "SET_VRING_KICK 1",
		"SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1",
		"GET_FEATURES",
	}, fresh.Log(), "the setup is replayed as after a virtiofsd crash, the rings at the guest's used index")
	mem := fresh.Files(vhostuser.AddMemReg)
	require.Len(t, mem, 1)
	assert.Equal(t, inode(t, q.mem), inode(t, mem[0]), "the fresh virtiofsd maps the guest's own memory")
	assert.Equal(t, map[uint32]uint32{0: 300, 1: 7}, rec.Bases)
	assert.True(t, f.Status().Degraded, "the session goes on degraded: the fresh virtiofsd has no FUSE state")
	kept := st2.names()
	assert.Contains(t, kept, "crash-vm", "the resumed session keeps its record for the next crash")
	assert.Contains(t, kept, "crash-rec-0")
	assert.Contains(t, kept, "crash-rec-1")
	r, err := LoadCrashRecord(st2.passed())
	require.NoError(t, err, "a second kill finds a good record")
	assert.Len(t, r.cp.Files, 8)
	r.Close()
}

func TestAKilledShimsRequestAwaitingItsReplyIsAnsweredByTheNextShim(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.hold = vhostuser.GetStatus
	q, _, kill := journaled(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	require.NoError(t, q.conn.WriteMessage(&vhostuser.Message{
		Header: vhostuser.Header{Request: vhostuser.GetStatus, Flags: vhostuser.FlagVersion},
	}))
	waitFor(t, old.received, vhostuser.GetStatus.String())
	stored := kill()
	defer closeStored(stored)

	_, _, rec, _ := resumeAfterKill(t, stored)
	assert.Equal(t, 1, rec.Answered)
	reply, err := q.conn.ReadMessage()
	require.NoError(t, err, "QEMU gets the reply it waits for, not a hang")
	defer reply.Close()
	assert.Equal(t, vhostuser.GetStatus, reply.Request)
	assert.Equal(t, vhostuser.U64(0xf).Bytes(), reply.Payload)
}

func TestATornCrashRecordFallsBackToTheSlotWrittenBefore(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, _, kill := journaled(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	stored := kill()
	defer closeStored(stored)
	// The newest slot, as a kill in the middle of its write leaves it.
	newest, best := "", uint64(0)
	for _, name := range []string{"crash-rec-0", "crash-rec-1"} {
		gen, _, err := readSlot(stored[name][0])
		require.NoError(t, err)
		if gen > best {
			newest, best = name, gen
		}
	}
	_, err := stored[newest][0].WriteAt([]byte("torn"), crashHeaderLen+3)
	require.NoError(t, err)

	r, err := LoadCrashRecord(stored)
	require.NoError(t, err)
	assert.Equal(t, best-1, r.gen, "the slot written before is read")
	r.Close()
}

func TestNoGoodCrashRecordClosesTheVMsConnection(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, _, kill := journaled(t, old, oldConn)
	q.realize()
	stored := kill()
	for _, name := range []string{"crash-rec-0", "crash-rec-1"} {
		_, err := stored[name][0].WriteAt([]byte("torn"), crashHeaderLen+3)
		require.NoError(t, err)
	}
	r, err := LoadCrashRecord(stored)
	assert.Nil(t, r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "torn")
	assert.Contains(t, err.Error(), "restart the VM")
	_, err = q.conn.ReadMessage()
	assert.Error(t, err, "the VM's connection is closed: QEMU sees the share disconnected, not a hang")
}

func TestTheStoreHoldsOnlyTheDescriptorsTheRecordsReferTo(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, st, _ := journaled(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	for range 5 {
		q.resetGuest()
		q.startDriver(false)
	}
	fds := 0
	for _, n := range st.names() {
		if strings.HasPrefix(n, "crash-fd-") {
			fds++
		}
	}
	// One record refers to the memory, the back-end channel and three
	// eventfds per ring: 8; the slot written before may still refer to as
	// many. Each SET_VRING_CALL brings a new descriptor, so without pruning
	// there would be dozens.
	assert.LessOrEqual(t, fds, 16)
}

func TestTheRecordLeavesTheStoreWhenTheVMHangsUp(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, st, _ := journaled(t, old, oldConn)
	q.realize()
	q.startDriver(true)
	require.NotEmpty(t, st.names())
	q.conn.Close()
	assert.Eventually(t, func() bool { return len(st.names()) == 0 }, testTimeout, time.Millisecond,
		"a session that ended leaves nothing in the store")
}

func TestASessionSavedForARestartLeavesNoCrashRecordBesideItsCheckpoint(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	st := newMemStore(t)
	q, f, ran := sessionWith(t, old, oldConn, Config{Journal: st})
	q.realize()
	q.startDriver(true)
	require.Contains(t, st.names(), "crash-vm", "the running session is kept in the store")

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cp, err := f.SaveForRestart(ctx)
	require.NoError(t, err)
	defer cp.Close()
	require.ErrorIs(t, <-ran, ErrSavedForRestart)
	assert.Empty(t, st.names(), "the checkpoint holds the session now: no record of it is left for a later shim")
	stored := inStore(t, cp)
	defer closeStored(stored)
	r, err := LoadCrashRecord(stored)
	assert.Nil(t, r)
	assert.NoError(t, err, "a checkpoint is no crash record")
}

// TestComparingStoredDescriptorsLeavesQEMUsEventfdsNonBlocking: the crash
// record finds a descriptor systemd already holds by comparing open file
// descriptions; QEMU's kick and call eventfds are shared with QEMU and
// virtiofsd, and must stay non-blocking (a blocking one can stall QEMU's
// main loop when it clears a notifier that was not signalled). sameFile reads
// the descriptors through SyscallConn, never File.Fd().
func TestComparingStoredDescriptorsLeavesQEMUsEventfdsNonBlocking(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	require.NoError(t, err)
	kick := os.NewFile(uintptr(efd), "kick")
	t.Cleanup(func() { kick.Close() })
	held, err := dup(kick)
	require.NoError(t, err)
	t.Cleanup(func() { held.Close() })
	same, err := sameFile(kick, held)
	require.NoError(t, err)
	assert.True(t, same, "a dup is the same open file description")

	flags, err := unix.FcntlInt(uintptr(efd), unix.F_GETFL, 0) // kick's own number: reading it is harmless
	require.NoError(t, err)
	assert.NotZero(t, flags&unix.O_NONBLOCK, "the eventfd QEMU shares is still non-blocking")
}
