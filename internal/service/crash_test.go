package service

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// notes records what the shim tells systemd.
type notes struct {
	mu  sync.Mutex
	all []string
}

func (n *notes) Notify(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.all = append(n.all, s)
	return nil
}

func (n *notes) last() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.all) == 0 {
		return ""
	}
	return n.all[len(n.all)-1]
}

// crashSession is a session serving a VM, with a state and a notifier.
func crashSession(t *testing.T) (*Session, *notes, *test.Hook) {
	t.Helper()
	n := &notes{}
	log, hook := test.NewNullLogger()
	s := &Session{
		Sock:     &activation.Socket{Path: "/run/virtiofsd/vm1.sock"},
		Plan:     &plan.Plan{Config: &config.Config{SharedDir: "/srv/vm1"}},
		Instance: &Instance{Notifier: n, State: state.NewWriter("", "vm1", 1)},
		Log:      logrus.NewEntry(log),
	}
	return s, n, hook
}

// deadBackend is a virtiofsd that was ready, then ended with err.
func deadBackend(pid int, err error) *backend {
	b := unreadyBackend(pid, err)
	close(b.ready)
	return b
}

// unreadyBackend is a virtiofsd that ended with err before it was ready.
func unreadyBackend(pid int, err error) *backend {
	b := &backend{done: make(chan error, 1), ready: make(chan struct{}), cancel: func() {}}
	b.pid.Store(int64(pid))
	b.done <- err
	return b
}

func TestTheSessionGivesUpAtTheFifthCrashWithinAMinute(t *testing.T) {
	var c crashes
	t0 := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	for i := 1; i < plan.CrashLimit; i++ {
		n, over := c.add(t0.Add(time.Duration(i) * time.Second))
		assert.Equal(t, i, n)
		assert.False(t, over, "crash %d is recovered", i)
	}
	n, over := c.add(t0.Add(10 * time.Second))
	assert.Equal(t, plan.CrashLimit, n)
	assert.True(t, over, "the fifth crash within 60 s gives up")

	// Crashes a minute apart never reach the bound.
	var slow crashes
	for i := range 20 {
		_, over := slow.add(t0.Add(time.Duration(i) * plan.CrashWindow))
		assert.False(t, over)
	}
}

func TestACrashLoopFailsTheServiceWithItsOwnExitStatusAndStatus(t *testing.T) {
	s, n, _ := crashSession(t)
	cl := &CrashLoopError{Crashes: 5, Last: "exit status 1"}
	rerr := &front.RecoveryError{Cause: front.ErrBackendGone, Err: fmt.Errorf("start a fresh virtiofsd: %w", cl)}
	err := s.gaveUp(rerr)
	require.Error(t, err)
	assert.Equal(t, 71, exitcode.For(err))
	assert.Equal(t, "crash loop: virtiofsd crashed 5 times within 60 s under a connected VM (with the front), so the shim gave up and closed the VM's connection: the guest's share waits until the VM restarts",
		exitcode.Explain(71))
	assert.Contains(t, n.last(), "STATUS=Failed: virtiofsd crashed 5 times within 1m0s (the last: exit status 1), so the shim gave up and closed the VM's connection")

	// A refused recovery (a thread pool) ends the session as without the
	// front: with virtiofsd's own failure, after a line saying why.
	refused := &front.RecoveryError{Cause: front.ErrBackendGone, Err: errors.New("virtiofsd runs a thread pool")}
	assert.NoError(t, s.gaveUp(refused))
}

func TestARespawnPastTheBoundIsRefusedWithoutStartingVirtiofsd(t *testing.T) {
	s, _, hook := crashSession(t)
	for range plan.CrashLimit - 1 {
		s.crashCount.add(time.Now())
	}
	sig := launch.ExitError{Status: syscall.WaitStatus(syscall.SIGKILL), Flavor: virtiofsd.Rust}
	s.cur = deadBackend(815, &sig)
	r := s.respawn(t.Context(), respawnRequest{cause: front.ErrBackendGone})
	var cl *CrashLoopError
	require.ErrorAs(t, r.err, &cl)
	assert.Nil(t, r.conn)
	assert.Equal(t, "signal 9 (SIGKILL)", cl.Last)
	assert.Equal(t, logrus.ErrorLevel, hook.LastEntry().Level)
	assert.Equal(t, "virtiofsd crashed too often: the shim gives up", hook.LastEntry().Message)
}

func TestAVirtiofsdEndIsNamedBySignalOrStatus(t *testing.T) {
	s, _, _ := crashSession(t)
	for _, tc := range []struct {
		err  error
		says string
	}{
		{&launch.ExitError{Status: syscall.WaitStatus(syscall.SIGKILL), Flavor: virtiofsd.Rust}, "signal 9 (SIGKILL)"},
		{&launch.ExitError{Status: syscall.WaitStatus(1 << 8), Flavor: virtiofsd.Rust}, "exit status 1"},
		{nil, "exit status 0"},
	} {
		assert.Equal(t, tc.says, s.endOf(deadBackend(815, tc.err)))
	}
}

func TestOnlyAFailedEndUnderAConnectedVMIsACrash(t *testing.T) {
	s, _, _ := crashSession(t)
	killed := &launch.ExitError{Status: syscall.WaitStatus(syscall.SIGKILL), Flavor: virtiofsd.Rust}
	s.cur = deadBackend(815, nil)
	<-s.cur.done
	assert.False(t, s.crashed(killed), "no VM: the session ends as before")
	s.front = &front.Front{}
	assert.False(t, s.crashed(nil), "a clean end is the VM leaving")
	assert.True(t, s.crashed(killed))
	assert.Nil(t, s.curDone(), "Run's loop no longer ends on it")
	assert.Equal(t, killed, <-s.cur.done, "its error waits for the session's end")
}

// TestAVirtiofsdThatFailsBeforeItIsReadyIsNoCrashEvenWithTheVMConnected:
// the VM is accepted before virtiofsd is ready (its first requests wait
// for virtiofsd). One that fails then fails its session as without a VM,
// with its own error: no fresh virtiofsd is tried, which would fail alike,
// and the journal says once why the VM loses its connection.
func TestAVirtiofsdThatFailsBeforeItIsReadyIsNoCrashEvenWithTheVMConnected(t *testing.T) {
	s, _, hook := crashSession(t)
	s.front = &front.Front{}
	failed := &launch.ExitError{Status: syscall.WaitStatus(1 << 8), Flavor: virtiofsd.Rust, BeforeReady: true}
	s.cur = unreadyBackend(815, failed)
	assert.False(t, s.crashed(failed))
	assert.NotNil(t, s.curDone(), "Run's loop ends on it")
	r := s.respawn(t.Context(), respawnRequest{cause: front.ErrBackendGone})
	require.ErrorIs(t, r.err, errNotReady, "the front's call for a fresh one, if it comes first, is refused")
	assert.Nil(t, r.conn)
	assert.Equal(t, failed, <-s.cur.done, "its error is the session's")
	var told int
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "ended before it was ready, with the VM already connected") {
			told++
		}
	}
	assert.Equal(t, 1, told, "said once")
	assert.Zero(t, s.crashCount.times, "not counted as a crash")
}

func TestARecoveredSessionIsDegradedInTheStateStatusAndJournal(t *testing.T) {
	s, n, hook := crashSession(t)
	s.Instance.State.Update(func(st *state.State) {
		st.Phase, st.Failure = state.Failed, &state.Failure{Reason: "virtiofsd was killed by signal 9", ExitCode: 137}
	})
	s.lastEnd = "signal 9 (SIGKILL)"
	s.freshPID.Store(816)
	s.recovered(front.Recovery{Took: 40 * time.Millisecond})
	s.recovered(front.Recovery{Took: 40 * time.Millisecond})

	st := s.Instance.State.Current()
	assert.Equal(t, state.Serving, st.Phase)
	assert.Nil(t, st.Failure)
	require.NotNil(t, st.Degraded)
	assert.Equal(t, 2, st.Degraded.Recoveries)
	assert.Equal(t, "signal 9 (SIGKILL)", st.Degraded.LastEnd)

	assert.Equal(t, "STATUS=Degraded: virtiofsd crashed (signal 9 (SIGKILL); 2 recoveries), the guest must umount and mount /srv/vm1's share again; "+
		"serving on /run/virtiofsd/vm1.sock (virtiofsd pid 816)", n.last())
	e := hook.LastEntry()
	assert.Equal(t, logrus.WarnLevel, e.Level)
	assert.True(t, strings.HasPrefix(e.Message, "degraded: virtiofsd crashed"))
	assert.Contains(t, e.Message, "in the guest, close everything open on the share, then umount and mount it again")
}

func TestAFreshVirtiofsdThatDiesAtStartCountsAsACrashUntilTheShimGivesUp(t *testing.T) {
	s, _, hook := crashSession(t)
	s.Plan.Binary = "/bin/false"
	s.Plan.Version = virtiofsd.Version{Flavor: virtiofsd.Rust}
	s.Plan.ReadyTimeout, s.Plan.StopTimeout = 5*time.Second, time.Second
	sig := launch.ExitError{Status: syscall.WaitStatus(syscall.SIGKILL), Flavor: virtiofsd.Rust}
	s.cur = deadBackend(815, &sig)
	r := s.respawn(t.Context(), respawnRequest{cause: front.ErrBackendGone})
	var cl *CrashLoopError
	require.ErrorAs(t, r.err, &cl, "%v", r.err)
	assert.Equal(t, plan.CrashLimit, cl.Crashes, "the killed one, then a fresh one per try")
	assert.Equal(t, "exit status 1", cl.Last, "the last is the fresh one that failed")
	var starts int
	for _, e := range hook.AllEntries() {
		if e.Message == "virtiofsd ended under the connected VM: starting a fresh one" {
			starts++
		}
	}
	assert.Equal(t, plan.CrashLimit-1, starts)
}
