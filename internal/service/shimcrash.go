package service

import (
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// directMarker is the name of the memfd a shim keeps in systemd's store
// while its virtiofsd serves a VM without the front: a shim that finds it
// at start follows one that was killed under such a session.
const directMarker = "direct-session"

// ShimKilledError is the end of a shim started again after the last one
// was killed while its virtiofsd served a VM without the front: virtiofsd
// was stopped with it (KillMode=mixed), and nothing could keep the VM's
// connection, which virtiofsd held.
type ShimKilledError struct{}

func (e *ShimKilledError) Error() string {
	return "the last shim was killed while its virtiofsd served a VM without the front (FRONT=no, or a virtiofsd that cannot save its state), " +
		"so virtiofsd was stopped with it and the VM's share is disconnected: restart the VM to get it back (with FRONT=auto and the Rust virtiofsd a shim crash keeps the VM)"
}

// ExitCode is the shim's exit status after such a crash.
func (e *ShimKilledError) ExitCode() int { return exitcode.ShimKilled }

// lostDirectSession tells whether the store passed a direct session's
// marker, and drops it from the store.
func (in *Instance) lostDirectSession(stored []*os.File) bool {
	fs := fdstore.ByName(stored)[directMarker]
	if len(fs) == 0 {
		return false
	}
	for _, f := range fs {
		f.Close()
	}
	_, _ = in.store().Remove(directMarker)
	return true
}

// markDirect wraps sv's Publish so that the shim keeps the direct
// session's marker in systemd's store while virtiofsd serves a VM; the
// returned func drops it once the session ended.
func (in *Instance) markDirect(sv *launch.Supervisor) (unmark func()) {
	var marked atomic.Bool
	pub := sv.Publish
	sv.Publish = func(c launch.Change) {
		if pub != nil {
			pub(c)
		}
		if c.Phase != state.Serving || marked.Load() {
			return
		}
		fd, err := unix.MemfdCreate("virtiofsd-shim "+directMarker, unix.MFD_CLOEXEC)
		if err != nil {
			in.Log.WithError(err).Warn("a shim crash could not be told apart later: make the direct session's marker")
			return
		}
		f := os.NewFile(uintptr(fd), directMarker)
		defer f.Close()
		if ok, err := in.store().Store(directMarker, f); err != nil {
			in.Log.WithError(fmt.Errorf("keep the direct session's marker in systemd's fd store: %w", err)).Warn("a shim crash could not be told apart later")
		} else if ok {
			marked.Store(true)
		}
	}
	return func() {
		if marked.Load() {
			_, _ = in.store().Remove(directMarker)
		}
	}
}
