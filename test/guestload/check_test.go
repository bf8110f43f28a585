package guestload

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startCheck runs Check on a new folder, with a deleted file held, and
// returns the folder, its output (to read once the run has ended) and the
// run's end.
func startCheck(t *testing.T, limit time.Duration) (string, *bytes.Buffer, chan error) {
	t.Helper()
	dir := t.TempDir()
	out := &bytes.Buffer{}
	done := make(chan error, 1)
	p := CheckParams{Label: "fs", Stop: filepath.Join(dir, "stop"), Limit: limit, Keep: 3, Deleted: true}
	go func() { done <- Check(out, dir, p) }()
	return dir, out, done
}

// waitRounds waits until the run has appended at least n lines.
func waitRounds(t *testing.T, dir string, n int) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		b, _ := os.ReadFile(filepath.Join(dir, CheckAppend))
		assert.GreaterOrEqual(c, bytes.Count(b, []byte("\n")), n)
	}, time.Minute, 10*time.Millisecond)
}

func summary(t *testing.T, out string) CheckRecord {
	t.Helper()
	recs := ParseCheck(out)
	require.NotEmpty(t, recs, out)
	s := recs[len(recs)-1]
	require.Equal(t, "summary", s.Event, out)
	return s
}

func TestCheckRunsCleanRoundsUntilTheStopFileAppears(t *testing.T) {
	dir, out, done := startCheck(t, time.Hour)
	waitRounds(t, dir, 4)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644))
	require.NoError(t, <-done, out.String())

	s := summary(t, out.String())
	assert.Len(t, ParseCheck(out.String()), 1, "no error line:\n%s", out)
	assert.Equal(t, "fs", s.Label)
	assert.Zero(t, s.Errors)
	assert.True(t, s.Stopped)
	assert.GreaterOrEqual(t, s.Rounds, 4)
	assert.GreaterOrEqual(t, s.Ops, 9*s.Rounds-3, "every operation of every round counted")
	assert.NotEmpty(t, s.MaxOp)
	assert.Positive(t, s.MaxLatency())
	b, err := os.ReadFile(filepath.Join(dir, CheckAppend))
	require.NoError(t, err)
	assert.Equal(t, s.Rounds, bytes.Count(b, []byte("\n")))
	assert.EqualValues(t, len(b), s.AppendSize)
	data, _ := filepath.Glob(filepath.Join(dir, "data.*"))
	assert.Len(t, data, 3, "only the last Keep files stay")
	assert.NoFileExists(t, filepath.Join(dir, checkDeleted), "the deleted file is gone from the folder")
	assert.FileExists(t, filepath.Join(dir, CheckUp))
}

func TestCheckReportsEachOperationThatSeesDataItDidNotWrite(t *testing.T) {
	dir, out, done := startCheck(t, time.Hour)
	waitRounds(t, dir, 2)
	// Behind the run's back: its appended file loses its lines, and its
	// held file changes.
	require.NoError(t, os.WriteFile(filepath.Join(dir, CheckAppend), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, CheckHeld), []byte("changed"), 0o644))
	waitRounds(t, dir, 2) // counted again from the emptied file
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644))
	err := <-done
	require.Error(t, err)
	assert.Contains(t, err.Error(), "failed on "+dir)
	assert.Contains(t, out.String(), `"op":"held"`)
	assert.Contains(t, out.String(), `"op":"appended"`)

	s := summary(t, out.String())
	assert.Positive(t, s.Errors)
	for _, r := range ParseCheck(out.String()) {
		if r.Event == "error" {
			assert.NotEmpty(t, r.Op)
			assert.Positive(t, r.Round)
			assert.NotEmpty(t, r.Error)
		}
	}
	assert.Equal(t, s.Errors, strings.Count(out.String(), `"check":"error"`), "each failure has its line")
}

func TestCheckEndsWithAnErrorWhenTheStopFileNeverAppears(t *testing.T) {
	_, out, done := startCheck(t, time.Nanosecond)
	err := <-done
	require.Error(t, err)
	s := summary(t, out.String())
	assert.False(t, s.Stopped)
	assert.Equal(t, 1, s.Errors)
	assert.Contains(t, out.String(), `"op":"stop"`)
}

func TestCheckRefusesARunWithoutAStopFile(t *testing.T) {
	err := Check(&bytes.Buffer{}, t.TempDir(), CheckParams{Limit: time.Minute, Keep: 1})
	assert.ErrorContains(t, err, "a stop file")
}
