package service

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

func TestTheSupervisorsChangesMakeTheState(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  launch.Change
		phase   state.Phase
		release state.Release
	}{
		{"started", launch.Change{PID: 7, Phase: state.Starting}, state.Starting, state.NotAsked},
		{"ready", launch.Change{PID: 7, Phase: state.Waiting}, state.Waiting, state.NotAsked},
		{"connected", launch.Change{PID: 7, Phase: state.Serving}, state.Serving, state.NotAsked},
		{"released while serving", launch.Change{PID: 7, Phase: state.Serving, Released: true, KeepsServing: true}, state.Serving, state.KeepsServing},
		{"released with a client queued", launch.Change{PID: 7, Phase: state.Waiting, Released: true, KeepsServing: true}, state.Waiting, state.KeepsServing},
		{"released with no client", launch.Change{PID: 7, Phase: state.Waiting, Released: true, Stopping: true}, state.Released, state.LetGo},
		{"stopped by systemd", launch.Change{PID: 7, Phase: state.Serving, Stopping: true}, state.Stopping, state.NotAsked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := state.NewWriter("", "vm1", 1)
			publish(w, tc.change)
			got := w.Current()
			assert.Equal(t, tc.phase, got.Phase)
			assert.Equal(t, tc.release, got.Release)
			assert.Equal(t, 7, got.VirtiofsdPID)
		})
	}
}

func TestFinishRecordsHowTheRunEnded(t *testing.T) {
	w := state.NewWriter("", "vm1", 1)
	publish(w, launch.Change{PID: 7, Phase: state.Serving})
	Finish(w, nil, 0)
	got := w.Current()
	assert.Equal(t, state.Ended, got.Phase)
	assert.Zero(t, got.VirtiofsdPID)
	assert.Nil(t, got.Failure)

	Finish(w, errors.New("virtiofsd exited with status 1"), 1)
	got = w.Current()
	assert.Equal(t, state.Failed, got.Phase)
	assert.Equal(t, &state.Failure{Reason: "virtiofsd exited with status 1", ExitCode: 1}, got.Failure)
	Finish(nil, nil, 0) // no state: nothing to do
}
