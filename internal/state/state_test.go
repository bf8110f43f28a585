package state

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStateRoundTrip(t *testing.T) {
	in := &State{
		Instance: "vm1", ShimPID: 812, Phase: Serving, VirtiofsdPID: 815,
		Session: "4f0c", SessionNumber: 3, Standby: true,
		Socket: "/run/virtiofsd/vm1.sock", SharedDir: "/srv/vm1",
		Release: KeepsServing, Failure: &Failure{Reason: "virtiofsd exited 1", ExitCode: 70},
		Updated: time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC),
	}
	b, err := Marshal(in)
	require.NoError(t, err)
	out, err := Parse(b)
	require.NoError(t, err)
	want := *in
	want.Version = Version
	assert.Equal(t, &want, out)
}

func TestParseRefusesAnotherVersion(t *testing.T) {
	_, err := Parse([]byte(`{"version": 2, "phase": "serving"}`))
	assert.ErrorContains(t, err, "version 2")
	_, err = Parse([]byte(`Serving a vhost-user client`))
	assert.Error(t, err)
}

func TestWriterPublishesEachChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "vm1.json")
	w := NewWriter(path, "vm1", 812)
	w.Update(func(s *State) { s.VirtiofsdPID = 815 })
	got, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, Starting, got.Phase)
	assert.Equal(t, 815, got.VirtiofsdPID)
	assert.True(t, got.Live(812))
	assert.False(t, got.Live(0))

	w.Update(func(s *State) { s.Phase = Waiting; s.Standby = true })
	got, err = Read(path)
	require.NoError(t, err)
	assert.Equal(t, "standby", got.Client())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left behind")
}

func TestReadMissingIsNil(t *testing.T) {
	s, err := Read(filepath.Join(t.TempDir(), "none.json"))
	assert.NoError(t, err)
	assert.Nil(t, s)
}

func TestMarkerRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "virtiofsd", "vm1.restart")
	d := Deferral{Since: time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC), UnitFileState: "enabled"}
	require.NoError(t, WriteMarker(path, d))
	got, err := ReadMarker(path)
	require.NoError(t, err)
	d.Version = MarkerVersion
	assert.Equal(t, &d, got)

	require.NoError(t, os.WriteFile(path, nil, 0o644)) // touch
	got, err = ReadMarker(path)
	require.NoError(t, err)
	assert.Equal(t, &Deferral{}, got, "a hand-made marker still defers")

	require.NoError(t, RemoveMarker(path))
	require.NoError(t, RemoveMarker(path))
	got, err = ReadMarker(path)
	assert.NoError(t, err)
	assert.Nil(t, got)
}
