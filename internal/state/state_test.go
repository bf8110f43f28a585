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
		Movable: false, UnmovableReason: "a packed ring",
		Virtiofsd: &Binary{Path: "/usr/libexec/virtiofsd", Version: "1.13.2", Device: 2049, Inode: 77, Size: 4096,
			ModTime: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)},
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

func TestParseRefusesANewerVersion(t *testing.T) {
	_, err := Parse([]byte(`{"version": 3, "phase": "serving"}`))
	assert.ErrorContains(t, err, "version 3, this virtiofsd-shim reads versions 1 to 2: a newer virtiofsd-shim wrote it")
	_, err = Parse([]byte(`{"phase": "serving"}`))
	assert.ErrorContains(t, err, "version 0")
	_, err = Parse([]byte(`Serving a vhost-user client`))
	assert.Error(t, err)
}

// The reader of version 1 (the last package's list and check) refuses
// this version's file rather than misread it.
func TestAnOlderReaderRefusesThisVersionsFile(t *testing.T) {
	b, err := Marshal(&State{Instance: "vm1", Phase: Serving, Front: true, Movable: true})
	require.NoError(t, err)
	_, err = parse(b, 1)
	assert.ErrorContains(t, err, "version 2, this virtiofsd-shim reads versions 1 to 1")
}

// A shim of the last package still runs its session after an upgrade:
// its version 1 record reads, and says that nobody knows whether a
// restart would keep its VM, whatever its front says.
func TestAVersion1RecordReadsAsUnmovableSinceItsShimDidNotSay(t *testing.T) {
	b, err := marshal(&State{Instance: "vm1", ShimPID: 9, Phase: Serving, Front: true, Handovers: 2}, 1)
	require.NoError(t, err)
	got, err := Parse(b)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Version)
	assert.Equal(t, Serving, got.Phase)
	assert.Equal(t, 2, got.Handovers)
	assert.False(t, got.Movable)
	assert.Equal(t, UnmovableV1, got.UnmovableReason)
	assert.Nil(t, got.Virtiofsd)
}

func TestANewRunIsUnmovableUntilItsSessionSaysOtherwise(t *testing.T) {
	got := NewWriter("", "vm1", 1).Current()
	assert.False(t, got.Movable)
	assert.Equal(t, UnmovableStarting, got.UnmovableReason)
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
