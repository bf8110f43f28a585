package launch

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// runSession runs the scenario's supervisor with a release channel and
// returns the channel and where its outcome arrives.
func (s *scenario) runSession(t *testing.T) (chan struct{}, chan Outcome) {
	release := make(chan struct{})
	s.sv.Release = release
	outcome := make(chan Outcome, 1)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(cancel)
	go func() {
		out, err := s.sv.RunSession(ctx)
		outcome <- out
		s.result <- err
	}()
	return release, outcome
}

func TestReleaseStopsAVirtiofsdThatHasNoClient(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.Ready)
		release, outcome := s.runSession(t)
		s.notify.next(t) // Starting
		require.True(t, strings.HasPrefix(s.notify.next(t), "READY=1"))
		close(release)
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Releasing the socket: stopping virtiofsd"))
		require.NoError(t, s.wait(t), "nothing was lost: a clean end whatever virtiofsd's status")
		assert.Equal(t, Outcome{Released: true}, <-outcome)
		assert.True(t, gone(s.lines.pid()))
	})
}

func TestReleaseLetsAServingSessionGoOnUntilTheVMLeaves(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.Ready)
		release, outcome := s.runSession(t)
		s.notify.next(t) // Starting
		s.notify.next(t) // READY=1
		c := probe(t, s.sock)
		assert.True(t, strings.HasPrefix(s.notify.next(t), "STATUS=Serving"))
		close(release)
		time.Sleep(100 * time.Millisecond)
		require.NoError(t, vhostuser.GetFeatures(c, 5*time.Second), "the session still answers after the release")
		c.Close()
		require.NoError(t, s.wait(t))
		assert.Equal(t, Outcome{Served: true, Released: true}, <-outcome)
	})
}

// A client that connected a moment before the release, not accepted yet,
// counts as served: virtiofsd accepts it next.
func TestPendingClientSeesAConnectionNotYetAccepted(t *testing.T) {
	dir := t.TempDir()
	f, err := vhostuser.Listen(filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer f.Close()
	assert.False(t, PendingClient(f))
	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer c.Close()
	assert.True(t, PendingClient(f))
	assert.False(t, PendingClient(nil))
}

func TestStandbySessionsSayReadyOnceAndNameTheSession(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.Ready)
	s.sv.Standby = 1
	s.run(t)
	s.notify.next(t) // Starting
	first := s.notify.next(t)
	assert.True(t, strings.HasPrefix(first, "READY=1\nSTATUS=Waiting for a vhost-user client on "+s.sock), first)
	assert.Contains(t, first, ", standby for session 1)")
	probe(t, s.sock).Close()
	require.NoError(t, s.wait(t))

	s = start(t, virtiofsd.C, fakevirtiofsd.Ready)
	s.sv.Standby = 2
	s.sv.Session = "0123abcd"
	s.run(t)
	s.notify.next(t) // Starting
	second := s.notify.next(t)
	assert.True(t, strings.HasPrefix(second, "STATUS=Waiting for a vhost-user client on "), "no second READY=1: %q", second)
	assert.Contains(t, second, ", standby for session 2)")
	probe(t, s.sock).Close()
	require.NoError(t, s.wait(t))
	s.lines.mu.Lock()
	defer s.lines.mu.Unlock()
	require.NotEmpty(t, s.lines.records)
	for _, r := range s.lines.records {
		assert.Equal(t, "0123abcd", r.Session, r.Message)
	}
}

// Standby sessions follow one another in one service run, each perhaps
// shorter than the watchdog period: each session pets it as it starts.
func TestEachSessionPetsTheWatchdogAtOnce(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.Ready)
	s.sv.Watchdog = time.Hour
	s.run(t)
	for pet := false; !pet; {
		select {
		case d := <-s.notify.ch:
			pet = d.State == "WATCHDOG=1"
			require.False(t, strings.HasPrefix(d.State, "READY=1"), "READY=1 before the first WATCHDOG=1")
		case <-time.After(10 * time.Second):
			t.Fatal("no WATCHDOG=1 as the session started")
		}
	}
	s.cancel()
	require.NoError(t, s.wait(t))
}
