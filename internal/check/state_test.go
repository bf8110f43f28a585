package check

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// checkState is check's report of an instance's state, for a user scope
// whose runtime folder is a temporary one: the state fact ("" when none),
// and the warnings.
func checkState(t *testing.T) (rt string, report func() (string, []Finding)) {
	rt = t.TempDir()
	env := func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return rt
		}
		return ""
	}
	return rt, func() (string, []Finding) {
		r := &Report{Config: &config.Config{Instance: "vm1"}, Systemctl: "systemctl --user"}
		r.state(Options{Scope: config.User, Env: env, ProcessExists: processExists})
		line := ""
		for _, f := range r.Findings {
			if f.Code == CodeState {
				line = f.Message
			}
		}
		return line, r.Warnings()
	}
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
	assert.Equal(t, CodeDeferredRestartPending, warnings[0].Code)
	assert.Equal(t, marker, warnings[0].File)
	assert.Contains(t, warnings[0].Message, "deferred restart: virtiofsd@vm1.socket was restarted while a VM was served: it listens again once that VM disconnects")

	// The session ended, and resume could not start the socket.
	w.Update(func(s *state.State) { s.Phase, s.VirtiofsdPID = state.Ended, 0 })
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled", ResumeError: "start virtiofsd@vm1.socket: NoReply"}))
	_, warnings = report()
	require.Len(t, warnings, 1)
	assert.Equal(t, CodeDeferredRestartFailed, warnings[0].Code)
	assert.Contains(t, warnings[0].Message, "deferred restart failed")
	assert.Contains(t, warnings[0].Message, "NoReply")
	assert.Contains(t, warnings[0].Message, "rm "+marker+"; systemctl --user start virtiofsd@vm1.socket")
	assert.Equal(t, "rm "+marker+"; systemctl --user start virtiofsd@vm1.socket", warnings[0].Fix)

	// Left behind, with no error: the fix is the same.
	require.NoError(t, state.WriteMarker(marker, state.Deferral{UnitFileState: "enabled"}))
	_, warnings = report()
	require.Len(t, warnings, 1)
	assert.Equal(t, CodeDeferredRestartStale, warnings[0].Code)
	assert.Contains(t, warnings[0].Message, "deferred restart left behind")
	assert.Equal(t, "rm "+marker+"; systemctl --user start virtiofsd@vm1.socket", warnings[0].Fix)
}

func TestCheckSaysWhenTheShimThatWroteTheStateIsGone(t *testing.T) {
	rt, report := checkState(t)
	w := state.NewWriter(state.Path(rt, "vm1"), "vm1", 1<<22+1) // no such pid
	w.Update(func(s *state.State) { s.Phase = state.Waiting })
	line, _ := report()
	assert.Contains(t, line, "which no longer runs")
}

func TestCheckOfADegradedSessionIsAnErrorThatSaysHowTheGuestRecovers(t *testing.T) {
	rt, _ := checkState(t)
	env := func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return rt
		}
		return ""
	}
	w := state.NewWriter(state.Path(rt, "vm1"), "vm1", os.Getpid())
	w.Update(func(s *state.State) {
		s.Phase, s.VirtiofsdPID = state.Serving, 816
		s.Degraded = &state.Degraded{Recoveries: 2, LastEnd: "signal 9 (SIGKILL)", Since: time.Now()}
	})
	r := &Report{Config: &config.Config{Instance: "vm1"}, Systemctl: "systemctl --user"}
	err := r.state(Options{Scope: config.User, Env: env, ProcessExists: processExists})
	require.Error(t, err)
	assert.Equal(t, exitcode.Degraded, exitcode.For(err), "monitoring sees check fail")
	errs := r.Errors()
	require.Len(t, errs, 1)
	assert.Equal(t, CodeDegraded, errs[0].Code)
	assert.Contains(t, errs[0].Message, "vm1 is degraded: virtiofsd crashed under the VM (last: signal 9 (SIGKILL); 2 recoveries)")
	assert.Contains(t, errs[0].Message, "umount and mount it again")
	for _, f := range r.Findings {
		if f.Code == CodeState {
			assert.Contains(t, f.Message, "serving, virtiofsd pid 816, degraded (virtiofsd crashed, last: signal 9 (SIGKILL); 2 recoveries)")
		}
	}

	// Once the session is over, the mark is history: no error.
	w.Update(func(s *state.State) { s.Phase = state.Ended })
	r = &Report{Config: &config.Config{Instance: "vm1"}, Systemctl: "systemctl --user"}
	assert.NoError(t, r.state(Options{Scope: config.User, Env: env, ProcessExists: processExists}))
	assert.Empty(t, r.Errors())
}

// check says whether the running session can move, and warns when it runs
// a virtiofsd whose file an upgrade replaced, with the restart that moves
// it when it can.
func TestCheckSaysWhetherTheSessionCanMoveAndWhenItRunsAnOlderBinary(t *testing.T) {
	rt, report := checkState(t)
	bin := filepath.Join(t.TempDir(), "virtiofsd")
	require.NoError(t, os.WriteFile(bin, []byte("1.13.2"), 0o755))
	started, err := state.Identify(bin, "1.13.2")
	require.NoError(t, err)
	w := state.NewWriter(state.Path(rt, "vm1"), "vm1", os.Getpid())
	w.Update(func(s *state.State) {
		s.Phase, s.Front, s.Virtiofsd = state.Serving, true, started
		s.Movable, s.UnmovableReason = false, "virtiofsd has not negotiated REPLY_ACK"
	})
	line, warnings := report()
	assert.Contains(t, line, "serving, not movable: virtiofsd has not negotiated REPLY_ACK; at ")
	assert.Empty(t, warnings)

	require.NoError(t, os.WriteFile(bin+".new", []byte("1.14.0"), 0o755))
	require.NoError(t, os.Rename(bin+".new", bin))
	_, warnings = report()
	require.Len(t, warnings, 1)
	assert.Equal(t, CodeOlderBinary, warnings[0].Code)
	assert.Equal(t, "virtiofsd@vm1.service runs an older virtiofsd 1.13.2 than the installed one: "+bin+
		" was replaced since it was started (another file is installed there); its next session gets the installed one (this one cannot move: virtiofsd has not negotiated REPLY_ACK)",
		warnings[0].Message)
	assert.Empty(t, warnings[0].Fix)

	w.Update(func(s *state.State) { s.Movable, s.UnmovableReason = true, "" })
	line, warnings = report()
	assert.Contains(t, line, "serving, movable: a restart or reload keeps its VM; at ")
	require.Len(t, warnings, 1)
	assert.Equal(t, "systemctl --user restart virtiofsd@vm1.service", warnings[0].Fix)
	assert.Contains(t, warnings[0].Message, "; systemctl --user restart virtiofsd@vm1.service moves its VM onto the installed one")

	w.Update(func(s *state.State) { s.Phase = state.Ended })
	_, warnings = report()
	assert.Empty(t, warnings, "an ended run runs nothing")
}
