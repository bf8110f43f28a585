package hooks

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestReleaseDoesNothingWhenNoServiceRuns(t *testing.T) {
	f := newFake(t)
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Zero(t, f.kills)
}

func TestReleaseStopsAWaitingVirtiofsdAndReturnsOnceTheServiceEnded(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) {
		f.shimAnswers(false)
		go f.sessionEnds()
	}
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, "inactive", f.active[f.hook.service()], "the restart's start finds the service gone")
	assert.False(t, exists(f.marker()), "nothing to defer")
	assert.Empty(t, f.started)
}

// The old release read "waiting" from STATUS= and wrote no marker; the VM
// connected before the shim saw the signal, so the shim kept serving, and
// the socket's start was refused. Now the shim's answer decides.
func TestReleaseDefersWhenAVMConnectsBetweenTheTwoDecisions(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) { f.shimAnswers(true) } // the VM connected just now
	var out strings.Builder
	require.NoError(t, Release(ctx(t), f.hook, f, &out))
	d, err := state.ReadMarker(f.marker())
	require.NoError(t, err)
	require.NotNil(t, d, "the restart is deferred")
	assert.Equal(t, "enabled", d.UnitFileState)
	assert.Contains(t, out.String(), "listens again")

	f.sessionEnds() // the VM leaves later: resume starts the socket
	assert.Equal(t, []string{f.hook.socket()}, f.started)
	assert.Equal(t, []string{f.hook.service()}, f.stopped)
	assert.False(t, exists(f.marker()))
}

func TestReleaseOfAServingSessionWithoutRestartDefersNothing(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.jobs[f.hook.socket()] = "stop"
	f.onKill = func(int) { f.shimAnswers(true) }
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.False(t, exists(f.marker()))
	f.sessionEnds()
	assert.Empty(t, f.started, "a stopped socket stays stopped")
}

// The VM leaves while release runs, before the marker is written: resume
// has already looked and found none. Release sees the end on its second
// look and removes the marker, so that the restart starts the socket.
func TestReleaseWhenTheVMLeavesBeforeTheMarkerIsWritten(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) { f.shimAnswers(true) }
	f.onEnabled = f.sessionEnds // read just before the marker is written
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, 1, f.resumeRuns)
	assert.Empty(t, f.started, "resume found no marker")
	assert.False(t, exists(f.marker()), "no marker left: the restart's own start is not skipped")
}

// The VM leaves right after the marker is written: resume sees it and
// queues the socket's start; release's second look leaves nothing behind.
func TestReleaseWhenTheVMLeavesJustAfterTheMarkerIsWritten(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) { f.shimAnswers(true) }
	f.hook.AfterMarker = f.sessionEnds
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, []string{f.hook.socket()}, f.started)
	assert.False(t, exists(f.marker()))
}

// The VM leaves while the shim is ending and the service still runs its
// ExecStopPost=: release waits for the service's end before it decides.
func TestReleaseWhenTheShimHasExitedButTheServiceStillEnds(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(int) { f.shimAnswers(true) }
	f.hook.AfterMarker = func() {
		f.shim.Update(func(s *state.State) { s.Phase = state.Ended })
		f.mu.Lock()
		f.mainPID, f.active[f.hook.service()] = 0, "deactivating"
		f.mu.Unlock()
		go f.sessionEnds()
	}
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, "inactive", f.active[f.hook.service()])
	assert.False(t, exists(f.marker()))
}

// A SIGUSR1 that reaches the shim before signal.Notify is ignored by Go's
// runtime: release repeats it until the shim answers.
func TestReleaseSignalsAgainUntilTheShimAnswers(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Starting)
	f.jobs[f.hook.socket()] = "restart"
	f.onKill = func(n int) {
		if n == 1 {
			return // lost: the shim could not catch it yet
		}
		f.shimAnswers(false)
		go f.sessionEnds()
	}
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.GreaterOrEqual(t, f.kills, 2)
	assert.False(t, exists(f.marker()))
}

// The state file of an earlier run (another shim pid) is no answer, and
// the service's new main process gets no signal until it has published its
// own state: until then it may be systemd's child setting up the sandbox,
// or Go's runtime starting, whom SIGUSR1 would kill.
func TestReleaseSignalsOnlyAShimThatHasPublishedItsState(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Serving)
	f.shimAnswers(true) // the earlier run's answer
	f.mu.Lock()
	f.mainPID = 900 // this run's main process has published nothing yet
	f.mu.Unlock()
	f.jobs[f.hook.socket()] = "restart"
	published := false
	f.onMainPID = func(n int) {
		if n == 5 { // the shim starts and publishes
			rt, _ := f.hook.Scope.RuntimeDir(f.hook.Env)
			f.shim = state.NewWriter(state.Path(rt, inst), inst, 900)
			f.shim.Update(func(*state.State) {})
			published = true
		}
	}
	f.onKill = func(int) {
		assert.True(t, published, "SIGUSR1 before the shim could catch it")
		f.shimAnswers(false)
		go f.sessionEnds()
	}
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, 1, f.kills)
	assert.False(t, exists(f.marker()), "this run let go: nothing deferred")
}

func TestReleaseGivesUpWhenTheShimNeverAnswers(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Release(c, f.hook, f, discard{})
	assert.ErrorContains(t, err, "did not answer the release")
}

func TestResumeWithoutMarkerConnectsToNothing(t *testing.T) {
	f := newFake(t)
	connect := func(context.Context) (Manager, func(), error) {
		t.Fatal("resume connected to the manager with nothing to do")
		return nil, nil, nil
	}
	require.NoError(t, Resume(ctx(t), f.hook, connect, discard{}))
}

// An admin who stops, disables or masks a socket whose restart was
// deferred does not want it back once the VM leaves.
func TestResumeHonoursTheAdminAfterADeferredRestart(t *testing.T) {
	for _, tc := range []struct {
		name       string
		admin      func(f *fakeSystemd)
		wantsStart bool
	}{
		{"nothing changed", func(*fakeSystemd) {}, true},
		{"disable --now", func(f *fakeSystemd) { f.enablement[f.hook.socket()] = "disabled" }, false},
		{"disable --runtime --now", func(f *fakeSystemd) { f.enablement[f.hook.socket()] = "disabled" }, false},
		{"mask", func(f *fakeSystemd) { f.enablement[f.hook.socket()] = "masked" }, false},
		{"a queued stop", func(f *fakeSystemd) { f.jobs[f.hook.socket()] = "stop" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.startShim(state.Serving)
			f.jobs[f.hook.socket()] = "restart"
			f.onKill = func(int) { f.shimAnswers(true) }
			require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
			require.True(t, exists(f.marker()))
			f.jobs[f.hook.socket()] = ""
			tc.admin(f)
			f.sessionEnds()
			if tc.wantsStart {
				assert.Equal(t, []string{f.hook.socket()}, f.started)
			} else {
				assert.Empty(t, f.started, "the socket stays stopped")
			}
			assert.False(t, exists(f.marker()), "the deferral is over either way")
		})
	}
}

// A D-Bus error as resume starts the socket: the marker stays, with the
// error, for check to report; resume fails (logged at error level).
func TestResumeKeepsTheMarkerWhenTheStartFails(t *testing.T) {
	f := newFake(t)
	d := state.Deferral{Since: time.Now().UTC(), UnitFileState: "enabled"}
	require.NoError(t, state.WriteMarker(f.marker(), d))
	f.startErr = errors.New("org.freedesktop.DBus.Error.NoReply: did not receive a reply")
	err := Resume(ctx(t), f.hook, f.connect, discard{})
	var rerr *ResumeError
	require.ErrorAs(t, err, &rerr)
	got, rerr2 := Deferred(f.hook)
	require.NoError(t, rerr2)
	require.NotNil(t, got, "the marker stays")
	assert.Contains(t, got.ResumeError, "did not receive a reply")

	f.startErr = nil // the next try (a later session's end) starts it
	require.NoError(t, Resume(ctx(t), f.hook, f.connect, discard{}))
	assert.Equal(t, []string{f.hook.socket()}, f.started)
	assert.False(t, exists(f.marker()))
}

func TestResumeKeepsTheMarkerWhenTheManagerIsUnreachable(t *testing.T) {
	f := newFake(t)
	require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{UnitFileState: "enabled"}))
	connect := func(context.Context) (Manager, func(), error) { return nil, nil, errors.New("dial: no such file") }
	require.Error(t, Resume(ctx(t), f.hook, connect, discard{}))
	got, err := Deferred(f.hook)
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Contains(t, got.ResumeError, "no such file")
}
