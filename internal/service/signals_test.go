package service

import (
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeSignals are a test's signal channels, each holding one signal as
// os/signal's do.
type fakeSignals struct{ release, stop, reload chan os.Signal }

func newFakeSignals() fakeSignals {
	return fakeSignals{make(chan os.Signal, 1), make(chan os.Signal, 1), make(chan os.Signal, 1)}
}

func (f fakeSignals) watch(t *testing.T) (context.Context, *Signals) {
	t.Helper()
	ctx, s := WatchSignals(context.Background(), SignalSources{Release: f.release, Stop: f.stop, Reload: f.reload}, nil)
	t.Cleanup(s.Stop)
	return ctx, s
}

// assertNothingOn fails when c has a value, or is closed.
func assertNothingOn(t *testing.T, c <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-c:
		t.Error(msg)
	default:
	}
}

func TestASIGUSR1BeforeTheSessionStartsIsRememberedAsARelease(t *testing.T) {
	f := newFakeSignals()
	f.release <- syscall.SIGUSR1 // caught by main before run watches
	ctx, s := f.watch(t)
	<-s.Release // closed: the session, when it starts, sees the release
	assert.NoError(t, ctx.Err(), "a release is not a stop")
	assertNothingOn(t, s.Reloads, "a release is not a reload")
}

func TestASIGTERMStopsTheRunButReleasesNothing(t *testing.T) {
	f := newFakeSignals()
	ctx, s := f.watch(t)
	f.stop <- syscall.SIGTERM
	<-ctx.Done()
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
	assertNothingOn(t, s.Release, "a stop is not a release")
}

func TestEachSIGHUPIsOneReloadRequest(t *testing.T) {
	f := newFakeSignals()
	ctx, s := f.watch(t)
	for range 3 {
		f.reload <- syscall.SIGHUP
		<-s.Reloads
	}
	assert.NoError(t, ctx.Err(), "a reload does not stop the shim")
	assertNothingOn(t, s.Release, "a reload is not a release")
}

func TestASIGHUPNobodyTakesDoesNotOutliveTheRun(t *testing.T) {
	f := newFakeSignals()
	_, s := WatchSignals(context.Background(), SignalSources{Release: f.release, Stop: f.stop, Reload: f.reload}, nil)
	f.reload <- syscall.SIGHUP
	s.Stop() // the run returns with the request untaken: the watch ends
	select {
	case f.reload <- syscall.SIGHUP:
	default: // the first one was never read
	}
	assertNothingOn(t, s.Reloads, "a reload request was delivered after the run ended")
}

func TestStoppingTheSignalsStopsCatchingThem(t *testing.T) {
	stopped := false
	f := newFakeSignals()
	ctx, s := WatchSignals(context.Background(), SignalSources{Release: f.release, Stop: f.stop, Reload: f.reload}, func() { stopped = true })
	s.Stop()
	assert.True(t, stopped, "os/signal is told to stop delivering")
	<-ctx.Done()
}

func TestCatchSignalsHearsTheProcesssOwnSIGHUP(t *testing.T) {
	ctx, s := CatchSignals(context.Background(), nil)
	defer s.Stop()
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	<-s.Reloads
	assert.NoError(t, ctx.Err())
}
