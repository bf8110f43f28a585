package front

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// savedSession is a running session saved for a restart, and its
// checkpoint as systemd's store passes it back to the next shim: a
// descriptor per name, the saving shim's own copies closed.
func savedSession(t *testing.T) (*qemu, *fakeBackend, map[string][]*os.File) {
	t.Helper()
	old, oldConn := newFakeBackend(t)
	old.state = []byte("inodes and handles")
	q, f, ran := session(t, old, oldConn)
	q.realize()
	q.startDriver(true)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cp, err := f.SaveForRestart(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, <-ran, ErrSavedForRestart, "the front lets go of the session")
	return q, old, inStore(t, cp)
}

// inStore is cp as systemd's store passes it back to the next shim: a
// descriptor per name, cp's own closed.
func inStore(t *testing.T, cp *Checkpoint) map[string][]*os.File {
	t.Helper()
	stored := map[string][]*os.File{}
	for _, nf := range cp.Named() {
		d, err := dup(nf.File)
		require.NoError(t, err)
		require.Empty(t, stored[nf.Name], "names are unique")
		stored[nf.Name] = []*os.File{d}
	}
	cp.Close()
	return stored
}

func closeStored(stored map[string][]*os.File) {
	for _, fs := range stored {
		for _, f := range fs {
			f.Close()
		}
	}
}

func resume(t *testing.T, stored map[string][]*os.File) (*Front, *fakeBackend, <-chan error) {
	t.Helper()
	cp, err := LoadCheckpoint(stored)
	require.NoError(t, err)
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	f, err := Resume(ctx, cp, freshConn, Config{})
	require.NoError(t, err)
	return f, fresh, run(t, f)
}

func TestACheckpointRoundTrips(t *testing.T) {
	q, old, stored := savedSession(t)
	defer closeStored(stored)

	assert.Equal(t, []string{
		"SET_VRING_ENABLE 0 0", "SET_VRING_ENABLE 1 0", "GET_VRING_BASE 0", "GET_VRING_BASE 1",
		"SET_DEVICE_STATE_FD save", "CHECK_DEVICE_STATE",
	}, old.Log()[len(old.Log())-6:], "the old virtiofsd's rings are stopped, then its state saved")

	cp, err := LoadCheckpoint(stored)
	require.NoError(t, err)
	assert.Equal(t, len("inodes and handles"), cp.StateSize())
	state, err := readAll(cp.State, "state", maxStateSize)
	require.NoError(t, err)
	assert.Equal(t, "inodes and handles", string(state))
	d := cp.data
	assert.Equal(t, CheckpointVersion, d.Version)
	assert.Equal(t, uint64(qemuFeatures), d.Features)
	assert.Equal(t, uint64(qemuProtocol), d.ProtocolFeatures)
	assert.True(t, d.Owner)
	assert.Equal(t, map[uint32]uint32{0: 17, 1: 42}, d.Stopped, "where the rings stopped")
	require.Len(t, d.Regions, 1)
	assert.Equal(t, guestRAM, d.Regions[0].MemRegion)
	region, err := cp.file(d.Regions[0].File, "region")
	require.NoError(t, err)
	assert.Equal(t, inode(t, q.mem), inode(t, region), "the guest's memory is QEMU's own memfd")
	require.Len(t, d.Rings, 2)
	for i, r := range d.Rings {
		assert.Equal(t, uint32(1024), r.Num)
		kick, err := cp.file(r.Kick.File, "kick")
		require.NoError(t, err)
		assert.Equal(t, inode(t, q.kick[i]), inode(t, kick), "ring %d's kick eventfd", i)
	}
	bc, err := cp.file(d.BackendReq, "back-end channel")
	require.NoError(t, err)
	assert.Equal(t, inode(t, q.backendChan), inode(t, bc))

	// Nothing was read from the VM's connection after the save, and it is
	// still open: a request QEMU sends now waits in it.
	require.NoError(t, q.conn.WriteMessage(message(vhostuser.GetFeatures, nil, nil, false)))
	vm, err := dup(cp.VM)
	require.NoError(t, err)
	cp.Close()
	defer vm.Close()
	c, err := newConnFromFile(vm)
	require.NoError(t, err)
	defer c.Close()
	m, err := c.ReadMessage()
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, vhostuser.GetFeatures, m.Request, "the checkpoint holds the VM's own connection")
}

func TestAResumedSessionAnswersTheVMsNextRequest(t *testing.T) {
	q, old, stored := savedSession(t)
	// QEMU asks while no shim reads: the new one answers.
	answered := make(chan []byte, 1)
	go func() { answered <- q.send(vhostuser.GetQueueNum, nil, false) }()

	f, fresh, _ := resume(t, stored)
	v, err := vhostuser.ParseU64(<-answered)
	require.NoError(t, err)
	assert.Equal(t, vhostuser.U64(2), v)
	assert.Equal(t, "inodes and handles", string(fresh.Loaded()), "the new virtiofsd got the old one's state")

	q.send(vhostuser.GetStatus, nil, false)
	assert.Equal(t, "GET_STATUS", fresh.Log()[len(fresh.Log())-1])
	assert.NotContains(t, old.Log(), "GET_STATUS")
	assert.True(t, f.Status().Swappable, f.Status().Reason)
}

func TestTheRingsStartWhereTheyStopped(t *testing.T) {
	q, _, stored := savedSession(t)
	_, fresh, _ := resume(t, stored)

	assert.Equal(t, loadedAndStarted, fresh.Log(), "the new virtiofsd is set up, loaded, and its rings start where the old ones stopped, kick fds set while disabled")
	for i := range 2 {
		assert.Equal(t, uint64(1), eventCount(t, q.kick[i]), "ring %d is kicked once", i)
	}
	assert.Equal(t, inode(t, q.mem), inode(t, fresh.Files(vhostuser.AddMemReg)[0]))
}

func TestACheckpointOfAnUnknownVersionIsRefusedAndTheVMsConnectionClosed(t *testing.T) {
	q, _, stored := savedSession(t)
	b, err := readAll(stored[nameSetup][0], "setup", maxSetupSize)
	require.NoError(t, err)
	var d map[string]any
	require.NoError(t, json.Unmarshal(b, &d))
	d["version"] = CheckpointVersion + 1
	b, err = json.Marshal(d)
	require.NoError(t, err)
	stored[nameSetup][0].Close()
	stored[nameSetup][0], err = memfd("setup", b)
	require.NoError(t, err)

	cp, err := LoadCheckpoint(stored)
	require.Error(t, err)
	assert.Nil(t, cp)
	assert.Contains(t, err.Error(), "version 2")
	_, err = q.conn.ReadMessage()
	assert.ErrorIs(t, err, io.EOF, "the VM sees its connection end")
}

func TestAPartialCheckpointIsRefusedAndTheVMsConnectionClosed(t *testing.T) {
	q, _, stored := savedSession(t)
	stored[nameFile+"0"][0].Close()
	delete(stored, nameFile+"0")

	_, err := LoadCheckpoint(stored)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "partial")
	_, err = q.conn.ReadMessage()
	assert.ErrorIs(t, err, io.EOF, "the VM sees its connection end")
}

func TestNoCheckpointInTheStoreIsNotAnError(t *testing.T) {
	cp, err := LoadCheckpoint(map[string][]*os.File{"something-else": nil})
	assert.NoError(t, err)
	assert.Nil(t, cp)
}

func TestASessionThatCannotBeSavedGoesOn(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	q, f, _ := session(t, old, oldConn)
	q.send(vhostuser.GetFeatures, nil, false) // no protocol features negotiated yet

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cp, err := f.SaveForRestart(ctx)
	assert.Nil(t, cp)
	var se *SwapError
	require.True(t, errors.As(err, &se), "%v", err)
	assert.True(t, se.Kept)
	q.send(vhostuser.GetStatus, nil, false)
	assert.Equal(t, "GET_STATUS", old.Log()[len(old.Log())-1], "the session goes on")
}

func TestAResumedSessionLeavesNoFdOpen(t *testing.T) {
	before := openFDs(t)
	q, old, stored := savedSession(t)
	_, fresh, ran := resume(t, stored)
	q.conn.Close()
	require.NoError(t, <-ran)
	old.stop()
	fresh.stop()
	q.closeFiles()
	assert.Equal(t, before, openFDs(t), "every fd of the checkpoint and the resumed front is closed")
}

func newConnFromFile(f *os.File) (*vhostuser.Conn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return vhostuser.NewConn(c.(*net.UnixConn)), nil
}

func TestARequestQEMUSendsDuringTheSaveGoesToTheNewVirtiofsdWithItsFd(t *testing.T) {
	// QEMU asks; virtiofsd has not answered when the save is asked for.
	q, f, old, ran := replyDue(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	saved := make(chan *Checkpoint, 1)
	go func() {
		cp, err := f.SaveForRestart(ctx)
		assert.NoError(t, err)
		saved <- cp
	}()
	// A request with an fd QEMU sends meanwhile: the front holds it.
	call := newEventFD(t)
	require.NoError(t, q.conn.WriteMessage(message(vhostuser.SetVringCall, vhostuser.VringFD{Index: 1}.Bytes(), []*os.File{call}, false)))
	close(old.release)
	r, err := q.conn.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, vhostuser.GetStatus, r.Request, "QEMU gets its reply before the save")
	r.Close()
	cp := <-saved
	require.NotNil(t, cp)
	require.ErrorIs(t, <-ran, ErrSavedForRestart)
	calls := count(old.Log(), "SET_VRING_CALL 1")

	_, fresh, _ := resume(t, inStore(t, cp))
	q.roundTrip()
	assert.Equal(t, calls, count(old.Log(), "SET_VRING_CALL 1"), "the old virtiofsd never gets it")
	got := fresh.Files(vhostuser.SetVringCall)
	require.NotEmpty(t, got)
	assert.Equal(t, inode(t, call), inode(t, got[len(got)-1]), "the new virtiofsd gets it last, with QEMU's fd")
}
