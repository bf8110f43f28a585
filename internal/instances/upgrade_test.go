package instances

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
)

// binary writes a program file and records it as a shim records the
// program it starts.
func binary(t *testing.T, path, version string) *state.Binary {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(version), 0o755))
	b, err := state.Identify(path, version)
	require.NoError(t, err)
	return b
}

// upgradeFile puts a new file at path as dpkg does: written beside it,
// renamed over it.
func upgradeFile(t *testing.T, path, version string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".dpkg-new", []byte(version), 0o755))
	require.NoError(t, os.Rename(path+".dpkg-new", path))
}

// A session whose virtiofsd (or shim) file was replaced since it started
// runs an older binary: list says so in its row and its JSON, with what
// moves it onto the installed one; a session on the installed files says
// nothing, and neither does a past run's record.
func TestListSaysWhenASessionRunsABinaryOlderThanTheInstalledOne(t *testing.T) {
	w := newWorld(t)
	bin := t.TempDir()
	rust, c, shim := filepath.Join(bin, "virtiofsd"), filepath.Join(bin, "c-virtiofsd"), filepath.Join(bin, "virtiofsd-shim")
	rustOld, cOld, shimOld := binary(t, rust, "1.13.2"), binary(t, c, "7.2.22"), binary(t, shim, "1.0")
	for name, pid := range map[string]uint32{"moving": 812, "stuck": 813, "current": 814, "ended": 815} {
		w.configure(t, name)
		w.bus.add("virtiofsd@"+name+".service", "active", "running", map[string]any{"MainPID": pid})
	}
	w.publish(t, state.State{Instance: "moving", ShimPID: 812, Phase: state.Serving, Front: true, Movable: true,
		Shim: shimOld, Virtiofsd: rustOld})
	w.publish(t, state.State{Instance: "stuck", ShimPID: 813, Phase: state.Serving, Movable: false,
		UnmovableReason: "FRONT=no in /etc/virtiofsd/stuck.conf", Shim: shimOld, Virtiofsd: cOld})
	current := binary(t, filepath.Join(bin, "other"), "1.14")
	w.publish(t, state.State{Instance: "current", ShimPID: 814, Phase: state.Serving, Virtiofsd: current})
	w.publish(t, state.State{Instance: "ended", ShimPID: 99, Phase: state.Ended, Virtiofsd: rustOld})

	list, err := w.list(t)
	require.NoError(t, err)
	for _, in := range list {
		assert.Nil(t, in.Service.Older, "%s: nothing was upgraded yet", in.Name)
	}

	upgradeFile(t, rust, "1.14.0")
	upgradeFile(t, c, "7.2.23")
	list, err = w.list(t)
	require.NoError(t, err)
	rows := byName(list)
	assert.Equal(t, []Older{{Program: "virtiofsd", Path: rust, Version: "1.13.2", Reason: rust + " was replaced since it was started (another file is installed there)"}},
		rows["moving"].Service.Older)
	assert.Contains(t, Row(rows["moving"])[8], "runs an older virtiofsd 1.13.2 ("+rust+" was replaced since it was started (another file is installed there)); a restart moves its VM onto the installed binaries")
	assert.Contains(t, Row(rows["stuck"])[8], "runs an older virtiofsd 7.2.22")
	assert.Contains(t, Row(rows["stuck"])[8], "its next session gets the installed binaries (this one cannot move: FRONT=no in /etc/virtiofsd/stuck.conf)")
	assert.Nil(t, rows["current"].Service.Older)
	assert.Nil(t, rows["ended"].Service.Older, "a past run's record says nothing of the running one")

	upgradeFile(t, shim, "1.1")
	list, err = w.list(t)
	require.NoError(t, err)
	older := byName(list)["stuck"].Service.Older
	require.Len(t, older, 2)
	assert.Equal(t, "shim", older[0].Program)
	row := Row(byName(list)["stuck"])[8]
	assert.Contains(t, row, "runs an older shim 1.0 ("+shim+" was replaced since it was started (another file is installed there)), runs an older virtiofsd 7.2.22")
	assert.Equal(t, 1, strings.Count(row, "its next session gets the installed binaries"), "the hint once")
	var b strings.Builder
	require.NoError(t, WriteJSON(&b, list))
	assert.Contains(t, b.String(), `"older_binaries": [`)
	assert.Contains(t, b.String(), `"program": "shim"`)
}

// An upgrade moves exactly the running sessions whose shim says they are
// movable, and names each other running one with the reason.
func TestAnUpgradeMovesOnlyTheMovableRunningSessions(t *testing.T) {
	w := newWorld(t)
	for name, pid := range map[string]uint32{"front": 812, "idle-front": 813, "c": 814, "probe": 815, "old-shim": 816, "stopping": 817, "no-state": 818} {
		w.configure(t, name)
		w.bus.add("virtiofsd@"+name+".service", "active", "running", map[string]any{"MainPID": pid})
	}
	w.configure(t, "reloading")
	w.bus.add("virtiofsd@reloading.service", "reloading", "reload", map[string]any{"MainPID": uint32(819)})
	w.publish(t, state.State{Instance: "reloading", ShimPID: 819, Phase: state.Serving, Front: true, Movable: true})
	w.configure(t, "inactive")
	w.bus.add("virtiofsd@inactive.socket", "active", "listening", nil)
	w.bus.add("virtiofsd@inactive.service", "inactive", "dead", nil)
	w.publish(t, state.State{Instance: "front", ShimPID: 812, Phase: state.Serving, Front: true, Movable: true})
	w.publish(t, state.State{Instance: "idle-front", ShimPID: 813, Phase: state.Waiting, Front: true, Movable: true})
	w.publish(t, state.State{Instance: "c", ShimPID: 814, Phase: state.Serving, UnmovableReason: "a live swap needs the Rust virtiofsd"})
	w.publish(t, state.State{Instance: "probe", ShimPID: 815, Phase: state.Serving, Front: true,
		UnmovableReason: "virtiofsd has not negotiated REPLY_ACK"})
	w.publish(t, state.State{Instance: "stopping", ShimPID: 817, Phase: state.Stopping, Front: true, Movable: true})
	// The last package's shim: a version 1 record.
	require.NoError(t, os.MkdirAll(state.Dir(w.run), 0o755))
	require.NoError(t, os.WriteFile(state.Path(w.run, "old-shim"),
		[]byte(`{"version": 1, "instance": "old-shim", "shim_pid": 816, "phase": "serving", "front": true}`), 0o644))

	list, err := w.list(t)
	require.NoError(t, err)
	plan := UpgradePlan(list)
	got := map[string]string{}
	for _, m := range plan {
		got[m.Unit] = m.Reason
		if m.Move {
			got[m.Unit] = "move"
		}
	}
	assert.Equal(t, map[string]string{
		"virtiofsd@front.service":      "move",
		"virtiofsd@idle-front.service": "move",
		"virtiofsd@c.service":          "a live swap needs the Rust virtiofsd",
		"virtiofsd@probe.service":      "virtiofsd has not negotiated REPLY_ACK",
		"virtiofsd@old-shim.service":   state.UnmovableV1,
		"virtiofsd@stopping.service":   "its session is stopping",
		"virtiofsd@no-state.service":   "its shim has published no state, so whether a restart would keep its VM is unknown",
		"virtiofsd@reloading.service":  "its service is reloading",
	}, got, "the inactive instance is not in the plan")

	var out, why strings.Builder
	require.NoError(t, WritePlan(&out, &why, plan, PackageUpgrade))
	assert.Equal(t, "virtiofsd@front.service\nvirtiofsd@idle-front.service\n", out.String(), "one unit a line, for the maintainer scripts")
	assert.Contains(t, why.String(), "virtiofsd-shim: virtiofsd@c.service is left as it is: a live swap needs the Rust virtiofsd; it keeps the previous shim and virtiofsd until its VM disconnects")
	assert.Len(t, strings.Split(strings.TrimSpace(why.String()), "\n"), 6)
	why.Reset()
	out.Reset()
	require.NoError(t, WritePlan(&out, &why, plan, VirtiofsdUpgrade))
	assert.Equal(t, "virtiofsd@front.service\nvirtiofsd@idle-front.service\n", out.String(), "a virtiofsd upgrade selects the same")
	assert.Contains(t, why.String(), "it keeps the virtiofsd it runs until its VM disconnects")
}

func TestAnUpgradeIsNamedPackageOrVirtiofsd(t *testing.T) {
	u, err := ParseUpgrade("virtiofsd")
	require.NoError(t, err)
	assert.Equal(t, VirtiofsdUpgrade, u)
	_, err = ParseUpgrade("shim")
	assert.EqualError(t, err, `unknown upgrade "shim": use package or virtiofsd`)
}
