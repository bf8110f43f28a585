package front

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// qemu72Protocol is a QEMU that negotiates neither DEVICE_STATE (QEMU
// before 8.2, such as Debian 12's 7.2) nor REPLY_ACK.
const qemu72Protocol = qemuProtocol &^ (vhostuser.ProtoDeviceState | vhostuser.ProtoReplyAck)

// augmented is what virtiofsd gets from the front for qemu72Protocol.
const augmented = qemu72Protocol | vhostuser.ProtoDeviceState | vhostuser.ProtoReplyAck

// runningQEMU72 is a session whose guest driver has started under a QEMU
// that negotiates qemu72Protocol. QEMU still sets NEED_REPLY where QEMU 10
// does (a stricter QEMU than 7.2, which sets none without REPLY_ACK).
func runningQEMU72(t *testing.T) (*qemu, *Front, *fakeBackend, <-chan error) {
	t.Helper()
	old, oldConn := newFakeBackend(t)
	old.state = []byte("inodes and handles")
	q, f, ran := session(t, old, oldConn)
	q.protocol = qemu72Protocol
	q.realize()
	q.startDriver(true)
	return q, f, old, ran
}

// requireNoStrayAck requires that QEMU's next reply is the one to its
// next request: nothing virtiofsd acked on the front's REPLY_ACK reached
// it.
func requireNoStrayAck(t *testing.T, q *qemu) {
	t.Helper()
	for i := range uint32(2) {
		q.send(vhostuser.SetVringEnable, state(i, 1), true)
	}
	got := q.send(vhostuser.GetFeatures, nil, false) // fails on any other reply
	v, err := vhostuser.ParseU64(got)
	require.NoError(t, err)
	assert.Equal(t, vhostuser.U64(virtiofsdFeatures), v, "QEMU's GET_FEATURES gets its own answer")
}

func TestASessionOfAQEMUWithoutDeviceStateIsSwappedSeveralTimes(t *testing.T) {
	q, f, old, _ := runningQEMU72(t)

	st := f.Status()
	require.True(t, st.Swappable, st.Reason)
	assert.Equal(t, uint64(qemu72Protocol), st.Setup.ProtocolFeatures, "the VM's view is what it negotiated")
	assert.Equal(t, uint64(augmented), st.Setup.BackendProtocolFeatures)
	assert.Equal(t, uint64(augmented), old.Acked(), "virtiofsd got DEVICE_STATE and REPLY_ACK from the front")
	requireNoStrayAck(t, q)

	for n := 1; n <= 3; n++ {
		fresh, freshConn := newFakeBackend(t)
		fresh.state = old.state
		fresh.start()
		_, err := swapTo(t, f, freshConn)
		require.NoError(t, err, "swap %d", n)
		assert.Equal(t, uint64(augmented), fresh.Acked(), "swap %d: the new virtiofsd gets the augmented set", n)
		assert.Equal(t, "inodes and handles", string(fresh.Loaded()), "swap %d: the state moved", n)
		requireNoStrayAck(t, q)
		assert.Contains(t, fresh.Log(), "GET_FEATURES", "swap %d: the session goes on with the new virtiofsd", n)
		old = fresh
	}
	assert.Equal(t, 3, f.Status().Swaps)
}

func TestASessionOfAQEMUWithoutDeviceStateIsSavedAndResumedForARestart(t *testing.T) {
	q, f, _, ran := runningQEMU72(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cp, err := f.SaveForRestart(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, <-ran, ErrSavedForRestart)
	stored := inStore(t, cp)
	defer closeStored(stored)

	resumed, fresh, _ := resume(t, stored)
	assert.Equal(t, uint64(augmented), fresh.Acked(), "the resumed virtiofsd gets the augmented set")
	assert.Equal(t, "inodes and handles", string(fresh.Loaded()))
	st := resumed.Status()
	assert.True(t, st.Swappable, st.Reason)
	assert.Equal(t, uint64(qemu72Protocol), st.Setup.ProtocolFeatures)
	requireNoStrayAck(t, q)
}

func TestAVirtiofsdThatOffersNoDeviceStateLeavesAQEMUWithoutItUnswappable(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	old.protocol &^= vhostuser.ProtoDeviceState
	q, f, _ := session(t, old, oldConn)
	q.protocol = qemu72Protocol
	q.realize()
	q.startDriver(true)

	st := f.Status()
	assert.False(t, st.Swappable)
	assert.Contains(t, st.Reason, "DEVICE_STATE")
	assert.Equal(t, uint64(qemu72Protocol|vhostuser.ProtoReplyAck), old.Acked(), "only what virtiofsd offered is added")
	requireNoStrayAck(t, q)
}

func TestAfterVirtiofsdDiesUnderAQEMUWithoutReplyAckTheFreshOneGetsTheAugmentedSet(t *testing.T) {
	old, oldConn := newFakeBackend(t)
	r := newRespawner(t)
	q, f, _ := sessionWith(t, old, oldConn, Config{Respawn: r.respawn})
	q.protocol = qemu72Protocol
	q.realize()
	q.startDriver(true)
	require.True(t, f.Status().Recoverable, f.Status().RecoveryReason)

	fresh := r.add()
	old.kill()
	requireNoStrayAck(t, q) // answered by the fresh virtiofsd
	assert.Equal(t, uint64(augmented), fresh.Acked(), "the replay sends virtiofsd the augmented set")
	assert.Equal(t, 1, f.Status().Recoveries)
}
