package state

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// names lists a folder, so that a test sees a temporary file left behind.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

func TestWriteFileSetsTheModeWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o644, 0o600, 0o640} {
		path := filepath.Join(dir, "vm1.json")
		require.NoError(t, WriteFile(path, []byte("{}\n"), mode))
		fi, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm())
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, "{}\n", string(b))
	}
	assert.Equal(t, []string{"vm1.json"}, names(t, dir))
}

// A rename over a folder fails: the old content stays, and the temporary
// file is removed.
func TestWriteFileThatCannotReplaceLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm1.json")
	require.NoError(t, os.MkdirAll(filepath.Join(path, "busy"), 0o755))
	err := WriteFile(path, []byte("{}\n"), 0o644)
	require.Error(t, err)
	assert.Equal(t, []string{"vm1.json"}, names(t, dir))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, fi.IsDir(), "what was there stays")
}

func TestWriteFileIntoAMissingFolderFails(t *testing.T) {
	dir := t.TempDir()
	err := WriteFile(filepath.Join(dir, "gone", "vm1.json"), []byte("{}\n"), 0o644)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Empty(t, names(t, dir))
}

func TestWriterReportsAFailedWriteToOnError(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "virtiofsd-shim")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644)) // a file where the folder goes
	path := filepath.Join(blocker, "vm1.json")
	w := NewWriter(path, "vm1", 812)
	var errs []error
	w.OnError = func(err error) { errs = append(errs, err) }
	w.Update(func(s *State) { s.Phase = Waiting })
	require.Len(t, errs, 1)
	assert.ErrorContains(t, errs[0], "write state "+path+": ")
	assert.ErrorIs(t, errs[0], syscall.ENOTDIR)
	assert.Equal(t, Waiting, w.Current().Phase, "the record in memory is up to date")

	w.OnError = nil
	w.Update(func(s *State) { s.Phase = Serving }) // no one to hear: no panic
	assert.Equal(t, Serving, w.Current().Phase)
}

func TestWriterWithoutPathKeepsTheRecordInMemory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	w := NewWriter("", "vm1", 812)
	at := time.Date(2026, 12, 7, 17, 0, 0, 0, time.FixedZone("CET", 3600))
	w.Now = func() time.Time { return at }
	w.OnError = func(err error) { t.Errorf("OnError: %v", err) }
	w.Update(func(s *State) { s.Phase, s.VirtiofsdPID = Waiting, 815 })
	got := w.Current()
	assert.Equal(t, State{Version: Version, Instance: "vm1", ShimPID: 812, Phase: Waiting, VirtiofsdPID: 815,
		UnmovableReason: UnmovableStarting, Updated: at.UTC()}, got)
	assert.Equal(t, time.UTC, got.Updated.Location(), "stamped in UTC")
	assert.Empty(t, names(t, dir), "nothing written")
}

func TestWriterStampsEachChangeWithItsClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.json")
	w := NewWriter(path, "vm1", 812)
	at := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	w.Now = func() time.Time { return at }
	w.Update(func(*State) {})
	got, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, at, got.Updated)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "list and check read it as any user")
}

func TestClientSaysWhatTheRecordSaysOfTheVM(t *testing.T) {
	for _, tc := range []struct {
		s    *State
		want string
	}{
		{nil, ""},
		{&State{Phase: Starting}, ""},
		{&State{Phase: Waiting}, "waiting"},
		{&State{Phase: Waiting, Standby: true}, "standby"},
		{&State{Phase: Waiting, Release: KeepsServing}, "connected"},
		{&State{Phase: Waiting, Standby: true, Release: KeepsServing}, "connected"},
		{&State{Phase: Waiting, Release: LetGo}, "waiting"},
		{&State{Phase: Serving}, "connected"},
		{&State{Phase: Serving, Standby: true}, "connected"},
		{&State{Phase: Stopping}, ""},
		{&State{Phase: Released, Release: LetGo}, ""},
		{&State{Phase: Ended}, ""},
		{&State{Phase: Failed, Standby: true}, ""},
	} {
		assert.Equal(t, tc.want, tc.s.Client(), "%+v", tc.s)
	}
}

func TestOnlyEndedAndFailedRunsAreOver(t *testing.T) {
	for p, over := range map[Phase]bool{Starting: false, Waiting: false, Serving: false, Stopping: false, Released: false, Ended: true, Failed: true} {
		assert.Equal(t, over, p.Over(), p)
	}
}

func TestLiveOnlyForTheRunningShimsOwnRecord(t *testing.T) {
	var none *State
	assert.False(t, none.Live(812), "no record")
	s := &State{ShimPID: 812}
	assert.True(t, s.Live(812))
	assert.False(t, s.Live(900), "an earlier run's record")
	assert.False(t, s.Live(0), "no main process")
	assert.False(t, (&State{}).Live(0), "a record without pid is no running shim's")
}

func TestReadSaysWhichFileItCouldNotRead(t *testing.T) {
	dir := t.TempDir()
	_, err := Read(dir) // a folder
	assert.ErrorContains(t, err, "read state: ")
	assert.ErrorIs(t, err, syscall.EISDIR)

	path := filepath.Join(dir, "vm1.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"version": 99}`), 0o644))
	_, err = Read(path)
	assert.EqualError(t, err, path+": parse state: version 99, this virtiofsd-shim reads versions 1 to 2: a newer virtiofsd-shim wrote it; use that one's list and check")

	require.NoError(t, os.WriteFile(path, []byte(`{"version": 1, "phase": 3}`), 0o644))
	_, err = Read(path)
	assert.ErrorContains(t, err, path+": parse state: ")
}

func TestMarkerErrorsNameTheMarker(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "virtiofsd")
	require.NoError(t, os.WriteFile(blocker, nil, 0o644))
	path := filepath.Join(blocker, "vm1.restart")
	err := WriteMarker(path, Deferral{})
	assert.ErrorContains(t, err, "write "+path+": ")
	assert.ErrorIs(t, err, syscall.ENOTDIR)

	_, err = ReadMarker(dir) // a folder
	assert.ErrorContains(t, err, "read "+dir+": ")

	busy := filepath.Join(dir, "busy.restart")
	require.NoError(t, os.MkdirAll(filepath.Join(busy, "x"), 0o755))
	err = RemoveMarker(busy)
	assert.ErrorContains(t, err, "remove "+busy+": ")
	assert.False(t, errors.Is(err, os.ErrNotExist))
}

func TestWriteMarkerReplacesTheFolderOfAnEarlierRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "virtiofsd", "vm1.restart")
	require.NoError(t, WriteMarker(path, Deferral{UnitFileState: "enabled"}))
	require.NoError(t, WriteMarker(path, Deferral{UnitFileState: "disabled", ResumeError: "no reply"}))
	got, err := ReadMarker(path)
	require.NoError(t, err)
	assert.Equal(t, "disabled", got.UnitFileState)
	assert.Equal(t, "no reply", got.ResumeError)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
}

// A write cut short (here by the file size limit, as by a full /run) is an
// error, and nothing replaces the old file: not even a part of the new one.
func TestWriteFileCutShortKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm1.json")
	require.NoError(t, os.WriteFile(path, []byte("old\n"), 0o644))
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	small := old
	small.Cur = 1024
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small))
	err := WriteFile(path, make([]byte, 4096), 0o644)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old))
	assert.ErrorIs(t, err, syscall.EFBIG)
	b, rerr := os.ReadFile(path)
	require.NoError(t, rerr)
	assert.Equal(t, "old\n", string(b))
	assert.Equal(t, []string{"vm1.json"}, names(t, dir))
}

func TestWriteMarkerThatCannotReplaceSaysWhichMarker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.restart")
	require.NoError(t, os.MkdirAll(filepath.Join(path, "busy"), 0o755))
	assert.ErrorContains(t, WriteMarker(path, Deferral{}), "write "+path+": ")
}

// A marker of another format still defers the socket's start; it reads as
// a zero Deferral, so that resume does not misread its fields.
func TestMarkerOfAnotherVersionReadsAsZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.restart")
	require.NoError(t, os.WriteFile(path, []byte(`{"version": 99, "unit_file_state": "enabled"}`), 0o644))
	got, err := ReadMarker(path)
	require.NoError(t, err)
	assert.Equal(t, &Deferral{}, got)
}

// A user instance's state needs XDG_RUNTIME_DIR; without it, Load says so
// instead of reading a path relative to the working folder.
func TestUserStateWithoutXDGRuntimeDirIsAnError(t *testing.T) {
	_, err := Load(config.User, func(string) string { return "" }, "vm1")
	assert.ErrorContains(t, err, "XDG_RUNTIME_DIR")
}

// TestWriterSkipsAChangeThatChangesNothing: the phase told again (by the
// VM's accept after virtiofsd's line said it) is not written again, nor
// stamped; a real change is, and so is any change after a failed write.
func TestWriterSkipsAChangeThatChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.json")
	w := NewWriter(path, "vm1", 812)
	at := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	w.Now = func() time.Time { return at }
	w.Update(func(s *State) { s.Phase = Serving })
	fi, err := os.Stat(path)
	require.NoError(t, err)
	at = at.Add(time.Minute)
	w.Update(func(s *State) { s.Phase = Serving })
	again, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, os.SameFile(fi, again), "not written again (a write renames a new file over it)")
	got, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, at.Add(-time.Minute), got.Updated, "nor stamped")

	w.Update(func(s *State) { s.Handovers = 1 })
	got, err = Read(path)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Handovers)
	assert.Equal(t, at, got.Updated)

	// A write that fails is tried again by the next change, even one
	// that changes nothing since.
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o755)) // the rename over it fails
	var failed int
	w.OnError = func(error) { failed++ }
	w.Update(func(s *State) { s.Handovers = 2 })
	require.NoError(t, os.Remove(path))
	w.Update(func(*State) {})
	got, err = Read(path)
	require.NoError(t, err)
	assert.Equal(t, 1, failed)
	assert.Equal(t, 2, got.Handovers)
}
