package main

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// checkState is check's report of an instance's state, for a user scope
// whose runtime folder is a temporary one.
func checkState(t *testing.T) (rt string, report func() (string, []string)) {
	rt = t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", rt)
	return rt, func() (string, []string) { return instanceState(config.User, "vm1", "systemctl --user") }
}

func TestCheckReportsTheStateAndADeferredRestart(t *testing.T) {
	rt, report := checkState(t)
	line, warnings := report()
	assert.Empty(t, line, "no state yet")
	assert.Empty(t, warnings)

	w := state.NewWriter(state.Path(rt, "vm1"), "vm1", os.Getpid())
	w.Update(func(s *state.State) {
		s.Phase, s.VirtiofsdPID, s.Session, s.SessionNumber, s.Release = state.Serving, 815, "4f0c", 1, state.KeepsServing
	})
	marker := state.MarkerPath(rt, "vm1")
	require.NoError(t, state.WriteMarker(marker, state.Deferral{Since: time.Now(), UnitFileState: "enabled"}))
	line, warnings = report()
	assert.Contains(t, line, "serving, virtiofsd pid 815, session 1 (4f0c), socket released: serves its VM until it disconnects")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "deferred restart: virtiofsd@vm1.socket was restarted while a VM was served: it listens again once that VM disconnects")

	// The session ended, and resume could not start the socket.
	w.Update(func(s *state.State) { s.Phase, s.VirtiofsdPID = state.Ended, 0 })
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled", ResumeError: "start virtiofsd@vm1.socket: NoReply"}))
	_, warnings = report()
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "deferred restart failed")
	assert.Contains(t, warnings[0], "NoReply")
	assert.Contains(t, warnings[0], "rm "+marker+"; systemctl --user start virtiofsd@vm1.socket")

	// Left behind, with no error: the fix is the same.
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled"}))
	_, warnings = report()
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "deferred restart left behind")
}

func TestCheckSaysWhenTheShimThatWroteTheStateIsGone(t *testing.T) {
	rt, report := checkState(t)
	w := state.NewWriter(state.Path(rt, "vm1"), "vm1", 1<<22+1) // no such pid
	w.Update(func(s *state.State) { s.Phase = state.Waiting })
	line, _ := report()
	assert.Contains(t, line, "which no longer runs")
}
