package handover

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/memfd"
)

type fakeJobs struct {
	jobType string
	err     error
	asked   []string
}

func (j *fakeJobs) QueuedJobType(_ context.Context, unit string) (string, error) {
	j.asked = append(j.asked, unit)
	return j.jobType, j.err
}

func TestOnlyARestartJobCountsAsARestart(t *testing.T) {
	for _, tc := range []struct {
		jobType string
		err     error
		restart bool
	}{
		{jobType: "restart", restart: true},
		{jobType: "stop"},
		{jobType: ""},
		{jobType: "start"},
		{err: errors.New("bus gone")},
	} {
		t.Run(tc.jobType, func(t *testing.T) {
			jobs := &fakeJobs{jobType: tc.jobType, err: tc.err}
			got, err := IsRestart(context.Background(), jobs, "virtiofsd@vm1.service")
			assert.Equal(t, tc.restart, got)
			assert.Equal(t, []string{"virtiofsd@vm1.service"}, jobs.asked)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				assert.Contains(t, err.Error(), "virtiofsd@vm1.service")
			} else {
				assert.NoError(t, err)
			}
		})
	}
	_, err := IsRestart(context.Background(), &fakeJobs{jobType: "restart"}, "")
	assert.Error(t, err, "a shim outside systemd is never restarted by it")
}

// fakeStore records what the shim asks of systemd's store.
type fakeStore struct {
	calls []string
	noEnv bool
}

func (s *fakeStore) Store(name string, files ...*os.File) (bool, error) {
	if s.noEnv {
		return false, nil
	}
	s.calls = append(s.calls, "store "+name)
	return true, nil
}

func (s *fakeStore) Remove(name string) (bool, error) {
	if s.noEnv {
		return false, nil
	}
	s.calls = append(s.calls, "remove "+name)
	return true, nil
}

func socketPair(t *testing.T) (*os.File, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	peer := os.NewFile(uintptr(fds[1]), "vm")
	c, err := net.FileConn(peer)
	peer.Close()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return os.NewFile(uintptr(fds[0]), "front-vm"), c.(*net.UnixConn)
}

func TestSaveReplacesEachNameAndStoresTheSetupRecordLast(t *testing.T) {
	vm, _ := socketPair(t)
	cp := &front.Checkpoint{VM: vm, Setup: memfd.New(t, "setup", "{}"), State: memfd.New(t, "state", ""),
		Files: []*os.File{memfd.New(t, "ram", ""), memfd.New(t, "kick", "")}}
	defer cp.Close()
	st := &fakeStore{}
	require.NoError(t, Save(st, cp))
	assert.Equal(t, []string{
		"remove front-fd-0", "store front-fd-0", "remove front-fd-1", "store front-fd-1",
		"remove front-vm", "store front-vm", "remove front-state", "store front-state",
		"remove front-setup", "store front-setup",
	}, st.calls)

	assert.ErrorIs(t, Save(&fakeStore{noEnv: true}, cp), ErrNoStore, "outside systemd nothing keeps the session")
}

func TestABrokenCheckpointIsDroppedFromTheStoreAndTheVMSeesTheEnd(t *testing.T) {
	vm, qemu := socketPair(t)
	other := memfd.New(t, "other", "")
	defer other.Close()
	stored := []*os.File{
		vm,
		memfd.New(t, "front-setup", "not json"),
		other,
	}
	st := &fakeStore{}
	cp, err := Take(st, stored)
	require.Error(t, err)
	assert.Nil(t, cp)
	assert.ElementsMatch(t, []string{"remove front-vm", "remove front-setup"}, st.calls, "only the checkpoint's names are dropped")

	_, err = qemu.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the VM sees its connection end")
	_, err = other.Stat()
	assert.NoError(t, err, "a descriptor that is no checkpoint's stays open")
}

func TestAStoreWithoutACheckpointIsLeftAlone(t *testing.T) {
	other := memfd.New(t, "other", "")
	defer other.Close()
	st := &fakeStore{}
	cp, err := Take(st, []*os.File{other})
	assert.NoError(t, err)
	assert.Nil(t, cp)
	assert.Empty(t, st.calls)
}
