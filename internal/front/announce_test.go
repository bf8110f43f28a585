package front

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

func announce(t *testing.T, f *Front) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return f.Announce(ctx)
}

func withdraw(t *testing.T, f *Front) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return f.Withdraw(ctx)
}

// A reload announces its swap before it starts the new virtiofsd: the
// serving virtiofsd gets F_LOG_ALL, as from a live migration's start, and
// prepares its save while the VM runs; the new one gets the VM's features
// only, and the old one is stopped with nothing else sent.
func TestAnAnnouncedSwapLetsTheOldVirtiofsdPrepareItsSaveBeforeThePause(t *testing.T) {
	q, f, old, before := running(t)

	require.NoError(t, announce(t, f))
	require.NoError(t, announce(t, f), "a second announce changes nothing")
	assert.Equal(t, []string{"SET_FEATURES log-all"}, old.Log()[before:])

	q.roundTrip()
	fresh, freshConn := newFakeBackend(t)
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"SET_FEATURES log-all", "GET_FEATURES",
		"SET_VRING_ENABLE 0 0", "SET_VRING_ENABLE 1 0", "GET_VRING_BASE 0", "GET_VRING_BASE 1",
		"SET_DEVICE_STATE_FD save", "CHECK_DEVICE_STATE",
	}, old.Log()[before:], "the announce is the only message the old virtiofsd gets beyond a swap's")
	assert.Equal(t, loadedAndStarted, fresh.Log(), "the new virtiofsd gets the VM's features, without F_LOG_ALL")
	require.NoError(t, withdraw(t, f))
	assert.NotContains(t, fresh.Log()[len(loadedAndStarted):], "SET_FEATURES", "the swap ended the announce")
}

// A reload that fails before its swap withdraws the announce: the serving
// virtiofsd gets the VM's features back, once.
func TestAWithdrawnAnnounceGivesVirtiofsdTheVMsFeaturesBack(t *testing.T) {
	_, f, old, before := running(t)

	require.NoError(t, announce(t, f))
	require.NoError(t, withdraw(t, f))
	require.NoError(t, withdraw(t, f))
	assert.Equal(t, []string{"SET_FEATURES log-all", "SET_FEATURES"}, old.Log()[before:])
}

// A swap whose load fails gives the rings back and withdraws the announce.
func TestAFailedSwapWithdrawsItsAnnounce(t *testing.T) {
	_, f, old, before := running(t)
	require.NoError(t, announce(t, f))

	fresh, freshConn := newFakeBackend(t)
	fresh.failLoad = true
	fresh.start()
	_, err := swapTo(t, f, freshConn)
	requireKept(t, err, StepLoad)
	log := old.Log()[before:]
	assert.Equal(t, "SET_FEATURES log-all", log[0])
	assert.Equal(t, []string{"SET_VRING_ENABLE 0 1", "SET_VRING_ENABLE 1 1", "SET_FEATURES"}, log[len(log)-3:],
		"the rings come back, then the VM's features")
}

// The VM's own SET_FEATURES replaces the announce: a live migration that
// starts meanwhile keeps its F_LOG_ALL when the reload withdraws.
func TestTheVMsOwnFeaturesReplaceAnAnnounce(t *testing.T) {
	q, f, old, before := running(t)
	require.NoError(t, announce(t, f))

	q.send(vhostuser.SetFeatures, vhostuser.U64(qemuFeatures|vhostuser.FeatureLogAll).Bytes(), false)
	q.roundTrip() // the front has passed it on
	require.NoError(t, withdraw(t, f))
	assert.Equal(t, []string{"SET_FEATURES log-all", "SET_FEATURES log-all", "GET_FEATURES"}, old.Log()[before:],
		"the migration's F_LOG_ALL is not withdrawn")
}

// An announce is refused where a swap would be, and sends nothing.
func TestAnAnnounceIsRefusedWhereASwapWouldBe(t *testing.T) {
	q, f, old, _ := running(t)
	q.send(vhostuser.Request(99), []byte{1, 2, 3, 4}, false)
	q.roundTrip() // the front has passed it on
	before := len(old.Log())

	err := announce(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "REQUEST(99)")
	assert.Len(t, old.Log(), before)
}
