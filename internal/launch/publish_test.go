package launch

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// changes records what the supervisor publishes.
type changes struct {
	mu  sync.Mutex
	all []Change
}

func (c *changes) add(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, ch)
}

func (c *changes) list() []Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Change(nil), c.all...)
}

func (c *changes) last() Change {
	l := c.list()
	if len(l) == 0 {
		return Change{}
	}
	return l[len(l)-1]
}

func TestPublishFollowsTheSession(t *testing.T) {
	eachFlavor(t, func(t *testing.T, fl virtiofsd.Flavor) {
		s := start(t, fl, fakevirtiofsd.Ready)
		var got changes
		s.sv.Publish = got.add
		s.run(t)
		s.notify.next(t) // Starting
		s.notify.next(t) // READY=1
		c := probe(t, s.sock)
		assert.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.Equal(c, state.Serving, got.last().Phase)
		}, 10*time.Second, 10*time.Millisecond)
		c.Close()
		require.NoError(t, s.wait(t))
		l := got.list()
		require.Len(t, l, 3)
		pid := l[0].PID
		assert.NotZero(t, pid)
		assert.Equal(t, []Change{{PID: pid, Phase: state.Starting}, {PID: pid, Phase: state.Waiting}, {PID: pid, Phase: state.Serving}}, l)
	})
}

// A release that came before the session started (SIGUSR1 while the shim
// read its config) is answered as the session starts: no client, so its
// virtiofsd is let go.
func TestAReleaseBeforeTheSessionIsAnsweredAtItsStart(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.Ready)
	var got changes
	s.sv.Publish = got.add
	release := make(chan struct{})
	close(release)
	s.sv.Release = release
	out, err := s.sv.RunSession(context.Background())
	require.NoError(t, err)
	assert.Equal(t, Outcome{Released: true}, out)
	last := got.last()
	assert.True(t, last.Released && last.Stopping && !last.KeepsServing, "%+v", last)
}

// The same, with the VM already queued on the socket (it is what started
// the service): the session serves it, and says so at once.
func TestAReleaseBeforeTheSessionKeepsAQueuedClient(t *testing.T) {
	s := start(t, virtiofsd.C, fakevirtiofsd.Ready)
	var got changes
	s.sv.Publish = got.add
	c, err := net.Dial("unix", s.sock)
	require.NoError(t, err)
	defer c.Close()
	release := make(chan struct{})
	close(release)
	s.sv.Release = release
	outcome := make(chan Outcome, 1)
	go func() {
		out, err := s.sv.RunSession(context.Background())
		outcome <- out
		s.result <- err
	}()
	assert.EventuallyWithT(t, func(ct *assert.CollectT) {
		assert.True(ct, got.last().KeepsServing)
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, vhostuser.GetFeatures(c, 10*time.Second), "the queued client is served")
	c.Close()
	require.NoError(t, s.wait(t))
	assert.Equal(t, Outcome{Served: true, Released: true}, <-outcome)
}
