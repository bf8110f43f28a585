package service

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Signals is what the signals sent to a run ask of it:
//   - SIGUSR1 is the socket's release (virtiofsd-shim release, the socket's
//     ExecStopPre=; see launch.Supervisor.Release). One that came before the
//     session exists is remembered: Release is closed, the session sees it
//     closed as it starts, and decides then.
//   - SIGTERM or SIGINT (systemctl stop) cancels the run's context. It can
//     come at any moment, even before virtiofsd runs: caught, it ends the
//     shim with 0 instead of killing it.
//   - SIGHUP is a reload request (virtiofsd-shim reload, the service's
//     ExecReload=), one value on Reloads each, answered in the typed state;
//     it does not stop the shim.
type Signals struct {
	// Release is closed at the first SIGUSR1.
	Release <-chan struct{}
	// Reloads gets one value for each SIGHUP, once the run takes it.
	Reloads <-chan struct{}

	done   chan struct{}
	cancel context.CancelFunc
	stop   func()
}

// SignalSources are the channels the signals arrive on: os/signal's in the
// program (CatchSignals), a test's own otherwise.
type SignalSources struct {
	Release <-chan os.Signal // SIGUSR1
	Stop    <-chan os.Signal // SIGTERM, SIGINT
	Reload  <-chan os.Signal // SIGHUP
}

// CatchSignals catches the run's signals from now on, and returns them with
// a context that a SIGTERM or SIGINT cancels. releases are the SIGUSR1s the
// program caught from its first instruction (main), since the release may
// come the moment systemd has started the service; nil catches them from
// here on. Stop the Signals when the run returns.
func CatchSignals(ctx context.Context, releases <-chan os.Signal) (context.Context, *Signals) {
	var unnotify []chan<- os.Signal
	notify := func(sig ...os.Signal) <-chan os.Signal {
		c := make(chan os.Signal, 1)
		signal.Notify(c, sig...)
		unnotify = append(unnotify, c)
		return c
	}
	if releases == nil {
		releases = notify(syscall.SIGUSR1)
	}
	src := SignalSources{Release: releases, Stop: notify(syscall.SIGTERM, syscall.SIGINT), Reload: notify(syscall.SIGHUP)}
	return WatchSignals(ctx, src, func() {
		for _, c := range unnotify {
			signal.Stop(c)
		}
	})
}

// WatchSignals is CatchSignals on src; stop, if not nil, runs at Stop.
func WatchSignals(ctx context.Context, src SignalSources, stop func()) (context.Context, *Signals) {
	release, reloads, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	s := &Signals{Release: release, Reloads: reloads, done: done, cancel: cancel, stop: stop}
	go func() {
		select {
		case <-src.Release:
			close(release)
		case <-done:
		}
	}()
	go func() {
		select {
		case <-src.Stop:
			cancel()
		case <-done:
		}
	}()
	go func() {
		for {
			select {
			case <-src.Reload:
				select {
				case reloads <- struct{}{}:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	return ctx, s
}

// Stop stops catching the signals and cancels the context; their default
// actions apply again.
func (s *Signals) Stop() {
	if s.stop != nil {
		s.stop()
	}
	s.cancel()
	close(s.done)
}
