package guestload

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunReportsEveryGroupInOrder(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, Run(&out, dir, "auto", nil, Tiny()))

	recs := ParseRecords(out.String())
	require.Len(t, recs, 2*len(Groups))
	for i, g := range Groups {
		begin, res := recs[2*i], recs[2*i+1]
		assert.Equal(t, Record{Event: "begin", Share: "auto", Group: g}, begin)
		assert.Equal(t, "result", res.Event, g)
		assert.Equal(t, g, res.Group)
		assert.True(t, res.OK, "%s: %s", g, res.Error)
		assert.Positive(t, res.NS, g)
	}
	want := map[string]struct {
		n    int
		unit string
	}{
		"create": {20, "file"}, "stat": {20, "file"}, "readdir": {20, "entry"}, "unlink": {20, "file"},
		"walk": {50, "entry"}, "read-small": {20, "file"}, "stream-write": {2, "MiB"}, "stream-read": {2, "MiB"},
	}
	for key, r := range Results(recs) {
		w := want[r.Group]
		assert.Equal(t, w.n, r.N, key)
		assert.Equal(t, w.unit, r.Unit, key)
	}
	// What the groups made for themselves is gone; what Prepare made stays
	// for the next run.
	assert.NoDirExists(t, filepath.Join(dir, "meta"))
	assert.NoFileExists(t, filepath.Join(dir, "stream.bin"))
	assert.FileExists(t, filepath.Join(dir, "tree.done"))
	assert.FileExists(t, filepath.Join(dir, "small.done"))
}

func TestEachRecordIsOneWrite(t *testing.T) {
	w := &countingWriter{}
	require.NoError(t, Run(w, t.TempDir(), "never", StreamGroups, Tiny()))
	assert.Equal(t, 4, w.writes)
	for _, line := range strings.Split(strings.TrimSpace(w.buf.String()), "\n") {
		assert.True(t, strings.HasPrefix(line, `{"event":`), line)
	}
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.buf.Write(p)
}

func TestPrepareMakesTheTreeOnceAndAgainForAnotherSize(t *testing.T) {
	dir := t.TempDir()
	p := Tiny()
	require.NoError(t, Prepare(dir, p))
	assert.Equal(t, p.TreeEntries, countEntries(t, filepath.Join(dir, "tree")))
	assert.Equal(t, p.Files, countEntries(t, filepath.Join(dir, "small")))
	fi, err := os.Stat(filepath.Join(dir, "small", fileName(0)))
	require.NoError(t, err)
	assert.EqualValues(t, smallSize, fi.Size())

	// Unchanged sizes: nothing is made again.
	marker := filepath.Join(dir, "tree", "d0000", "marker")
	require.NoError(t, os.WriteFile(marker, nil, 0o644))
	require.NoError(t, Prepare(dir, p))
	assert.FileExists(t, marker)

	p.TreeEntries = 250
	require.NoError(t, Prepare(dir, p))
	assert.NoFileExists(t, marker)
	assert.Equal(t, 250, countEntries(t, filepath.Join(dir, "tree")))
}

func countEntries(t *testing.T, root string) int {
	n := 0
	require.NoError(t, filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if path != root {
			n++
		}
		return err
	}))
	return n
}

func TestAFailingGroupIsReportedAndTheOthersRun(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	// stat before create: every file is missing.
	err := Run(&out, dir, "auto", []string{"stat", "stream-write", "stream-read"}, Tiny())
	require.ErrorContains(t, err, "1 group(s) failed: stat")
	res := Results(ParseRecords(out.String()))
	assert.False(t, res["auto/stat"].OK)
	assert.Contains(t, res["auto/stat"].Error, "no such file")
	assert.Equal(t, 0, res["auto/stat"].N)
	assert.True(t, res["auto/stream-write"].OK)
	assert.True(t, res["auto/stream-read"].OK)
}

func TestRunRefusesUnknownGroupsAndBadSizes(t *testing.T) {
	assert.ErrorContains(t, Run(&bytes.Buffer{}, t.TempDir(), "", []string{"mkfs"}, Tiny()), `unknown group "mkfs"`)
	assert.ErrorContains(t, Run(&bytes.Buffer{}, t.TempDir(), "", nil, Params{}), "sizes must be >= 1")
}

func TestParseRecordsSkipsConsoleNoise(t *testing.T) {
	serial := "[    1.234] virtiofs: loaded\r\n" +
		`{"event":"begin","share":"auto","group":"create"}` + "\r\n" +
		"GUEST_SCRIPT_EXIT=0\r\n" +
		`{"event":"result","share":"auto","group":"create","n":3,"unit":"file","ns":5,"ok":true}` + "\r\n" +
		`{"event":"result","share":"auto","group":` + "\r\n" // cut short
	recs := ParseRecords(serial)
	require.Len(t, recs, 2)
	assert.Equal(t, Record{Event: "result", Share: "auto", Group: "create", N: 3, Unit: "file", NS: 5, OK: true}, recs[1])
}

// TestBuildMakesAStaticProgramThatRuns builds the guest's binary and runs it
// here with tiny sizes, as the guest would.
func TestBuildMakesAStaticProgramThatRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips building the guest program")
	}
	bin := filepath.Join(t.TempDir(), "guestload")
	require.NoError(t, Build(context.Background(), bin))
	b, err := os.ReadFile(bin)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(b, []byte("ld-linux")), "a static binary names no dynamic loader")

	dir := t.TempDir()
	out, err := exec.Command(bin, "-dir", dir, "-share", "x", "-files", "5", "-tree", "7", "-stream-mib", "1", "-pause", "0", "-drop-caches=false").Output()
	require.NoError(t, err)
	res := Results(ParseRecords(string(out)))
	assert.Len(t, res, len(Groups))
	for k, r := range res {
		assert.True(t, r.OK, "%s: %s", k, r.Error)
	}

	cmd := exec.Command(bin, "-share", "x")
	require.Error(t, cmd.Run())
	assert.Equal(t, 2, cmd.ProcessState.ExitCode())
}
