package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
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

// A shim that let go has stopped its virtiofsd, but its service may still
// be deactivating: release returns only once it is inactive, or the
// restart's start of the socket would be refused.
func TestReleaseWaitsWhileTheServiceStaysActive(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.jobs[f.hook.socket()] = "restart"
	answered := false
	f.onKill = func(int) {
		f.shimAnswers(false)
		f.mu.Lock()
		answered = true
		f.mu.Unlock()
	}
	ended := false
	polls := 0
	f.onActive = func(int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !answered || ended {
			return
		}
		if polls++; polls == 5 { // still active for four reads after the answer
			ended = true
			f.mainPID = 0
			f.active[f.hook.service()] = "inactive"
		}
	}
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.True(t, ended, "release returned while the service was still active")
	assert.Equal(t, 5, polls)
}

// The shim gets SIGUSR1 again only every resend, not at every poll: each
// signal interrupts it, and a flood would delay the answer it is waiting for.
func TestReleaseResendsTheSignalAtMostTwiceASecond(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting) // published, but it never answers
	start := time.Now()
	c, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	err := Release(c, f.hook, f, discard{})
	elapsed := time.Since(start)
	require.ErrorContains(t, err, "did not answer the release")
	f.mu.Lock()
	kills, polls := f.kills, f.mainPIDs
	f.mu.Unlock()
	assert.GreaterOrEqual(t, kills, 1, "the shim was asked at once")
	assert.LessOrEqual(t, kills, int(elapsed/resend)+1, "signals sent in %v over %d polls", elapsed, polls)
}

func TestReleaseReturnsTheManagersErrors(t *testing.T) {
	boom := errors.New("org.freedesktop.DBus.Error.NoReply")
	for _, method := range []string{"ActiveState", "MainPID", "KillMain", "UnitFileState"} {
		t.Run(method, func(t *testing.T) {
			f := newFake(t)
			f.servesThroughRestart()
			f.errs[method] = boom
			err := Release(ctx(t), f.hook, f, discard{})
			assert.ErrorIs(t, err, boom)
			assert.False(t, exists(f.marker()), "no restart deferred on a failure")
		})
	}
}

func TestReleaseNamesTheServiceWhenTheSignalFails(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.errs["KillMain"] = errors.New("access denied")
	err := Release(ctx(t), f.hook, f, discard{})
	assert.EqualError(t, err, "ask virtiofsd@vm1.service to release its socket: access denied")
}

// The shim ended between release's look and its signal: systemd refuses
// the kill (no main process), and release has nothing left to do.
func TestReleaseWhenTheShimEndsAsItIsSignalled(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.jobs[f.hook.socket()] = "restart"
	f.errs["KillMain"] = errors.New("No main process to kill")
	f.onKill = func(int) { f.sessionEnds() }
	require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
	assert.Equal(t, 1, f.kills, "not signalled again")
	assert.False(t, exists(f.marker()))
}

// A stop (not a restart) of the socket while a VM is served defers
// nothing, and so does a job systemd could not report.
func TestReleaseDefersOnlyForARestart(t *testing.T) {
	for job, defers := range map[string]bool{"restart": true, "try-restart": true, "reload-or-start": true, "stop": false, "": false, "error": false} {
		t.Run(job, func(t *testing.T) {
			f := newFake(t)
			f.startShim(state.Serving)
			f.onKill = func(int) { f.shimAnswers(true) }
			if job == "error" {
				f.errs["JobType"] = errors.New("list jobs: timeout")
			} else {
				f.jobs[f.hook.socket()] = job
			}
			require.NoError(t, Release(ctx(t), f.hook, f, discard{}))
			assert.Equal(t, defers, exists(f.marker()))
		})
	}
}

func TestResumeKeepsTheMarkerWhenTheManagerFails(t *testing.T) {
	for _, method := range []string{"JobType", "UnitFileState", "Stop"} {
		t.Run(method, func(t *testing.T) {
			f := newFake(t)
			require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{UnitFileState: "enabled"}))
			f.errs[method] = errors.New(method + " failed")
			err := Resume(ctx(t), f.hook, f.connect, discard{})
			var rerr *ResumeError
			require.ErrorAs(t, err, &rerr)
			assert.Equal(t, f.hook.socket(), rerr.Socket)
			got, err := Deferred(f.hook)
			require.NoError(t, err)
			require.NotNil(t, got, "the marker stays")
			assert.Contains(t, got.ResumeError, method+" failed")
			assert.Empty(t, f.started)
		})
	}
}

func TestResumeOfAMarkerWithoutEnablementStartsTheSocket(t *testing.T) {
	f := newFake(t)
	require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{}))
	f.enablement[f.hook.socket()] = "static"
	var out strings.Builder
	require.NoError(t, Resume(ctx(t), f.hook, f.connect, &out))
	assert.Equal(t, []string{f.hook.socket()}, f.started)
	assert.Contains(t, out.String(), "starting virtiofsd@vm1.socket again")
}

func TestResumeLeavesARuntimeMaskedSocketStopped(t *testing.T) {
	f := newFake(t)
	require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{UnitFileState: "enabled"}))
	f.enablement[f.hook.socket()] = "masked-runtime"
	var out strings.Builder
	require.NoError(t, Resume(ctx(t), f.hook, f.connect, &out))
	assert.Empty(t, f.started)
	assert.Contains(t, out.String(), "it is masked")
	assert.False(t, exists(f.marker()))
}

func TestResumeErrorSaysTheSocketStaysDown(t *testing.T) {
	cause := errors.New("no reply")
	err := error(&ResumeError{Socket: "virtiofsd@vm1.socket", Err: cause})
	assert.EqualError(t, err, "start virtiofsd@vm1.socket again after its deferred restart: no reply (the socket stays down; see virtiofsd-shim check)")
	assert.ErrorIs(t, err, cause)
}

func TestStandbyQueuesTheServicesStart(t *testing.T) {
	f := newFake(t)
	require.NoError(t, Standby(ctx(t), f.hook, f))
	assert.Equal(t, []string{f.hook.service()}, f.started)

	f.startErr = errors.New("unit masked")
	assert.EqualError(t, Standby(ctx(t), f.hook, f), "start virtiofsd@vm1.service: unit masked")
}

func TestDeferredReadsTheMarker(t *testing.T) {
	f := newFake(t)
	d, err := Deferred(f.hook)
	require.NoError(t, err)
	assert.Nil(t, d, "no restart waits")
	require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{UnitFileState: "enabled-runtime"}))
	d, err = Deferred(f.hook)
	require.NoError(t, err)
	require.NotNil(t, d)
	assert.Equal(t, "enabled-runtime", d.UnitFileState)
}

// An admin restarting the socket while a VM is served is told why the
// session goes on, and when the socket listens again.
func TestReleaseOfAServingSessionSaysItGoesOn(t *testing.T) {
	f := newFake(t)
	f.servesThroughRestart()
	var out strings.Builder
	require.NoError(t, Release(ctx(t), f.hook, f, &out))
	assert.Equal(t, "virtiofsd@vm1.service serves a VM: it goes on until the VM disconnects\n"+
		"virtiofsd@vm1.socket listens again, with its new settings, as soon as that VM disconnects\n", out.String())
}

// A marker that cannot be written (here a folder is in its way) fails the
// release, saying what it could not do: no restart is silently lost.
func TestReleaseFailsWhenTheRestartCannotBeDeferred(t *testing.T) {
	f := newFake(t)
	f.servesThroughRestart()
	require.NoError(t, os.MkdirAll(filepath.Join(f.marker(), "in-the-way"), 0o755))
	err := Release(ctx(t), f.hook, f, discard{})
	assert.ErrorContains(t, err, "defer the socket's start: ")
}

// The session ended just after the marker was written, but its service
// never finishes ending: release gives up when its deadline comes, saying
// what it waited for, rather than report a restart that will not happen.
func TestReleaseGivesUpWhenTheEndedSessionsServiceNeverEnds(t *testing.T) {
	f := newFake(t)
	f.servesThroughRestart()
	f.hook.AfterMarker = func() {
		f.shim.Update(func(s *state.State) { s.Phase = state.Ended })
		f.mu.Lock()
		f.mainPID, f.active[f.hook.service()] = 0, "deactivating"
		f.mu.Unlock()
	}
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Release(c, f.hook, f, discard{})
	assert.ErrorContains(t, err, "waited for the session, which has just ended, to stop")
	assert.True(t, exists(f.marker()), "resume, when the service ends, still finds the marker")
}

// The manager fails on a later read, while release waits for the answer or
// for the service's end: release returns that error, not success.
func TestReleaseReturnsAManagerErrorWhileItWaits(t *testing.T) {
	boom := errors.New("org.freedesktop.DBus.Error.Disconnected")
	t.Run("for the answer", func(t *testing.T) {
		f := newFake(t)
		f.startShim(state.Waiting)
		f.onActive = func(n int) {
			if n == 1 { // Release's own look succeeds; the next one fails
				f.mu.Lock()
				f.errs["ActiveState"] = boom
				f.mu.Unlock()
			}
		}
		assert.ErrorIs(t, Release(ctx(t), f.hook, f, discard{}), boom)
	})
	t.Run("for the service's end", func(t *testing.T) {
		f := newFake(t)
		f.startShim(state.Waiting)
		f.onKill = func(int) { f.shimAnswers(false) }
		f.onMainPID = func(int) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.kills > 0 { // the answer is read: waitDone's look fails
				f.errs["ActiveState"] = boom
			}
		}
		assert.ErrorIs(t, Release(ctx(t), f.hook, f, discard{}), boom)
	})
}

func TestReleaseGivesUpWhenAServiceThatLetGoNeverEnds(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	f.onKill = func(int) { f.shimAnswers(false) }
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Release(c, f.hook, f, discard{})
	assert.ErrorContains(t, err, "waited for its virtiofsd, which has no client, to stop, virtiofsd@vm1.service still active")
}

// A state file the shim cannot have written (another format) is an error,
// not a shim that never answers.
func TestReleaseRefusesAStateFileItCannotRead(t *testing.T) {
	f := newFake(t)
	f.startShim(state.Waiting)
	rt, err := f.hook.Scope.RuntimeDir(f.hook.Env)
	require.NoError(t, err)
	require.NoError(t, state.WriteFile(state.Path(rt, inst), []byte(`{"version": 99}`), 0o644))
	assert.ErrorContains(t, Release(ctx(t), f.hook, f, discard{}), "version 99")
	assert.Zero(t, f.kills)
}

func TestHooksOfAUserInstanceNeedXDGRuntimeDir(t *testing.T) {
	h := Hook{Instance: inst, Scope: config.User, Env: func(string) string { return "" }}
	_, err := Deferred(h)
	assert.ErrorContains(t, err, "XDG_RUNTIME_DIR")
	connect := func(context.Context) (Manager, func(), error) {
		t.Fatal("resume connected without a marker to read")
		return nil, nil, nil
	}
	assert.ErrorContains(t, Resume(ctx(t), h, connect, discard{}), "XDG_RUNTIME_DIR")
}

func TestResumeFailsOnAMarkerItCannotRead(t *testing.T) {
	f := newFake(t)
	require.NoError(t, os.MkdirAll(filepath.Join(f.marker(), "in-the-way"), 0o755))
	err := Resume(ctx(t), f.hook, func(context.Context) (Manager, func(), error) {
		t.Fatal("resume connected without a marker it could read")
		return nil, nil, nil
	}, discard{})
	assert.ErrorContains(t, err, "read "+f.marker())
}

// Resume could neither start the socket nor record why in the marker: its
// error says both.
func TestResumeReportsAMarkerItCannotUpdate(t *testing.T) {
	f := newFake(t)
	require.NoError(t, state.WriteMarker(f.marker(), state.Deferral{UnitFileState: "enabled"}))
	connect := func(context.Context) (Manager, func(), error) {
		require.NoError(t, os.Remove(f.marker()))
		require.NoError(t, os.MkdirAll(filepath.Join(f.marker(), "in-the-way"), 0o755))
		return nil, nil, errors.New("dial: no such file")
	}
	err := Resume(ctx(t), f.hook, connect, discard{})
	assert.ErrorContains(t, err, "dial: no such file")
	assert.ErrorContains(t, err, "write "+f.marker())
}
