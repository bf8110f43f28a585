package service

import (
	"os"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// storeLog records what the shim asks of systemd's store.
type storeLog struct {
	mu  sync.Mutex
	ops []string
}

func (s *storeLog) Store(name string, _ ...*os.File) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, "store "+name)
	return true, nil
}

func (s *storeLog) Remove(name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, "remove "+name)
	return true, nil
}

func (s *storeLog) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ops...)
}

func storeInstance(t *testing.T) (*Instance, *storeLog) {
	t.Helper()
	st := &storeLog{}
	log, _ := test.NewNullLogger()
	return &Instance{Handover: &Handover{Store: st}, Log: logrus.NewEntry(log)}, st
}

func TestADirectSessionKeepsItsMarkerInTheStoreOnlyWhileItServesAVM(t *testing.T) {
	in, st := storeInstance(t)
	var published []state.Phase
	sv := &launch.Supervisor{Publish: func(c launch.Change) { published = append(published, c.Phase) }}
	unmark := in.markDirect(sv)
	sv.Publish(launch.Change{Phase: state.Waiting})
	assert.Empty(t, st.all(), "no VM yet: nothing to lose")
	sv.Publish(launch.Change{Phase: state.Serving})
	sv.Publish(launch.Change{Phase: state.Serving})
	assert.Equal(t, []string{"store direct-session"}, st.all())
	unmark()
	assert.Equal(t, []string{"store direct-session", "remove direct-session"}, st.all(), "the session ended: a later crash loses nothing")
	assert.Equal(t, []state.Phase{state.Waiting, state.Serving, state.Serving}, published, "the state is published as before")
}

func TestAShimAfterAKilledDirectSessionEndsWithItsOwnExitStatus(t *testing.T) {
	in, st := storeInstance(t)
	assert.False(t, in.lostDirectSession(nil))
	fd, err := unix.MemfdCreate("marker", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	assert.True(t, in.lostDirectSession([]*os.File{os.NewFile(uintptr(fd), directMarker)}))
	assert.Equal(t, []string{"remove direct-session"}, st.all(), "the marker leaves the store")
	err = &ShimKilledError{}
	assert.Equal(t, exitcode.ShimKilled, exitcode.For(err))
	assert.Contains(t, err.Error(), "restart the VM")
}
