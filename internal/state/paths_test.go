package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// unitValues reads a unit file of the repository's units/ folder: each
// "Section.Name" with its values, in order.
func unitValues(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "units", name))
	require.NoError(t, err)
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	require.NoError(t, err, name)
	v := map[string][]string{}
	for _, o := range opts {
		v[o.Section+"."+o.Name] = append(v[o.Section+"."+o.Name], o.Value)
	}
	return v
}

// TestUnitsSpellThePathsOfThisPackage: the units name the marker, the
// state folder and the socket with %t and %i; they must be the paths the
// shim and its hooks use (state, config.Scope.SocketPath), in both scopes,
// or a deferred restart would never be skipped (or never end), the state
// would be written where nobody reads it, and check would name another
// socket.
func TestUnitsSpellThePathsOfThisPackage(t *testing.T) {
	// A user's %t, as an absolute path that config.Scope takes.
	const userRT = "/run/user/%U"
	env := func(string) string { return userRT }
	for _, tc := range []struct {
		dir   string
		scope config.Scope
	}{
		{"", config.System},
		{"user", config.User},
	} {
		rt, err := tc.scope.RuntimeDir(env)
		require.NoError(t, err)
		percentT := func(p string) string { return strings.Replace(p, userRT, "%t", 1) }

		socket := unitValues(t, filepath.Join(tc.dir, "virtiofsd@.socket"))
		assert.Equal(t, []string{"!" + MarkerPath("%t", "%i")}, socket["Unit.ConditionPathExists"], "%s socket", tc.dir)
		sock, err := tc.scope.SocketPath(env, "%i")
		require.NoError(t, err)
		assert.Equal(t, []string{percentT(sock)}, socket["Socket.ListenStream"], "%s socket", tc.dir)
		assert.Equal(t, filepath.Dir(sock), filepath.Dir(MarkerPath(rt, "%i")), "%s: the marker lives beside the socket", tc.dir)

		service := unitValues(t, filepath.Join(tc.dir, "virtiofsd@.service"))
		require.Len(t, service["Service.RuntimeDirectory"], 1, "%s service", tc.dir)
		assert.Equal(t, Dir("%t"), filepath.Join("%t", service["Service.RuntimeDirectory"][0]), "%s service", tc.dir)
		assert.Equal(t, filepath.Join(Dir("%t"), "%i.json"), Path("%t", "%i"))
	}
}

// TestBumpingOneFormatVersionLeavesTheOtherReadable: the state file and the
// marker carry versions of their own. A shim whose state format moved on
// still reads the marker an older release wrote (and its enablement, which
// resume respects), and the other way round.
func TestBumpingOneFormatVersionLeavesTheOtherReadable(t *testing.T) {
	rt := t.TempDir()
	st := &State{Instance: "vm1", ShimPID: 812, Phase: Serving}
	d := Deferral{Since: time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC), UnitFileState: "enabled-runtime"}

	t.Run("state bumped", func(t *testing.T) {
		b, err := marshal(st, Version+1)
		require.NoError(t, err)
		_, err = Parse(b)
		assert.Error(t, err, "an older reader refuses the newer state")
		got, err := parse(b, Version+1)
		require.NoError(t, err)
		assert.Equal(t, Serving, got.Phase)

		require.NoError(t, WriteMarker(MarkerPath(rt, "vm1"), d))
		m, err := ReadMarker(MarkerPath(rt, "vm1"))
		require.NoError(t, err)
		assert.Equal(t, "enabled-runtime", m.UnitFileState, "the marker reads as it was written")
	})
	t.Run("marker bumped", func(t *testing.T) {
		require.NoError(t, writeMarker(MarkerPath(rt, "vm1"), d, MarkerVersion+1))
		m, err := ReadMarker(MarkerPath(rt, "vm1"))
		require.NoError(t, err)
		assert.Equal(t, &Deferral{}, m, "an older reader still defers, knowing nothing more")
		m, err = readMarker(MarkerPath(rt, "vm1"), MarkerVersion+1)
		require.NoError(t, err)
		assert.Equal(t, "enabled-runtime", m.UnitFileState)

		b, err := Marshal(st)
		require.NoError(t, err)
		got, err := Parse(b)
		require.NoError(t, err, "the state reads as it was written")
		assert.Equal(t, Serving, got.Phase)
	})
}

func TestAServiceKeepsItsStateWhereItsRuntimeDirectoryIs(t *testing.T) {
	for _, tc := range []struct{ env, rt, path string }{
		{"/run/virtiofsd-shim", "/run", "/run/virtiofsd-shim/vm1.json"},
		{"/run/user/1000/virtiofsd-shim", "/run/user/1000", "/run/user/1000/virtiofsd-shim/vm1.json"},
		{"/run/virtiofsd-shim:/run/other", "/run", "/run/virtiofsd-shim/vm1.json"},
	} {
		rt := FromRuntimeDirectory(tc.env)
		assert.Equal(t, tc.rt, rt, tc.env)
		assert.Equal(t, tc.path, Path(rt, "vm1"), tc.env)
		assert.Equal(t, tc.env[:len(Dir(rt))], Dir(rt), "%s: the folder systemd made is the state's", tc.env)
	}
	assert.Empty(t, FromRuntimeDirectory(""), "a shim run by hand has no runtime folder")
}
