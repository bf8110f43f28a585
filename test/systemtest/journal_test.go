package systemtest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// session connects to an instance like a VM and keeps the session open
// until the test ends.
func session(t *testing.T, b *shimbox.Box, instance string) net.Conn {
	t.Helper()
	c, err := b.Dial(instance, dialTimeout)
	require.NoError(t, err, status(b, "virtiofsd@"+instance+".service"))
	t.Cleanup(func() { c.Close() })
	return c
}

// virtiofsdPID returns the pid, inside the box, of the virtiofsd the
// instance's shim (the service's MainPID) started: the shim's only child.
func virtiofsdPID(t *testing.T, b *shimbox.Box, instance string) int {
	t.Helper()
	main := show(t, b, "virtiofsd@"+instance+".service", "MainPID")["MainPID"]
	require.NotEqual(t, "0", main)
	kids := children(t, b, main)
	require.Len(t, kids, 1, "children of the shim (pid %s)", main)
	pid, err := strconv.Atoi(kids[0])
	require.NoError(t, err)
	comm := strings.TrimSpace(run(t, b, "cat", "/proc/"+kids[0]+"/comm"))
	require.Equal(t, "virtiofsd", comm)
	return pid
}

func TestVirtiofsdLinesReachTheJournalWithTheirFields(t *testing.T) {
	shimbox.Legs(t, testVirtiofsdLinesReachTheJournalWithTheirFields)
}

func testVirtiofsdLinesReachTheJournalWithTheirFields(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	for _, inst := range []string{"x", "y"} {
		_, err := b.AddInstance(inst)
		require.NoError(t, err)
		enable(t, b, inst)
		session(t, b, inst)
	}
	pids := map[string]string{
		"x": strconv.Itoa(virtiofsdPID(t, b, "x")),
		"y": strconv.Itoa(virtiofsdPID(t, b, "y")),
	}
	waitJournal(t, b, leg.ConnectedLine(), "VIRTIOFSD_INSTANCE=x", "SYSLOG_IDENTIFIER=virtiofsd")
	waitJournal(t, b, leg.ConnectedLine(), "VIRTIOFSD_INSTANCE=y", "SYSLOG_IDENTIFIER=virtiofsd")

	t.Run("journalctl -u", func(t *testing.T) {
		var lines []string
		for _, e := range journal(t, b, "-u", "virtiofsd@x.service") {
			if e["SYSLOG_IDENTIFIER"] != "virtiofsd" {
				continue
			}
			lines = append(lines, e["MESSAGE"])
			assert.Equal(t, "x", e["VIRTIOFSD_INSTANCE"], e["MESSAGE"])
			assert.Equal(t, pids["x"], e["VIRTIOFSD_PID"], e["MESSAGE"])
			// The C virtiofsd's bare lines are informational; the
			// Rust one's levels map to priorities (its readiness and
			// connection lines are INFO, its RLIMIT_NOFILE line WARN).
			if !leg.Rust() || e["MESSAGE"] == leg.ReadyLine() || e["MESSAGE"] == leg.ConnectedLine() {
				assert.Equal(t, "6", e["PRIORITY"], e["MESSAGE"])
			}
			assert.Equal(t, "virtiofsd@x.service", e["_SYSTEMD_UNIT"], e["MESSAGE"])
			assert.Equal(t, "virtiofsd@x.service", e["OBJECT_SYSTEMD_UNIT"], e["MESSAGE"])
		}
		assert.Contains(t, lines, leg.ReadyLine())
		assert.Contains(t, lines, leg.ConnectedLine())
	})

	t.Run("VIRTIOFSD_INSTANCE= selects one instance", func(t *testing.T) {
		for inst, pid := range pids {
			entries := journal(t, b, "VIRTIOFSD_INSTANCE="+inst)
			require.NotEmpty(t, entries)
			var fromVirtiofsd int
			for _, e := range entries {
				assert.Equal(t, inst, e["VIRTIOFSD_INSTANCE"], e["MESSAGE"])
				assert.Equal(t, "virtiofsd@"+inst+".service", e["_SYSTEMD_UNIT"], e["MESSAGE"])
				// Names the unit even when journald misses the sender's
				// cgroup: see journal.FieldUnit.
				assert.Equal(t, "virtiofsd@"+inst+".service", e["OBJECT_SYSTEMD_UNIT"], e["MESSAGE"])
				if e["SYSLOG_IDENTIFIER"] == "virtiofsd" {
					fromVirtiofsd++
					assert.Equal(t, pid, e["VIRTIOFSD_PID"], e["MESSAGE"])
				}
			}
			assert.NotZero(t, fromVirtiofsd, "no virtiofsd line for instance %s", inst)
		}
	})
}

// TestTwoInstancesServeTheirOwnDirectories runs two sessions side by side
// and checks each shim says which directory it shares; the guest test
// checks the files themselves.
func TestTwoInstancesServeTheirOwnDirectories(t *testing.T) {
	shimbox.Legs(t, testTwoInstancesServeTheirOwnDirectories)
}

func testTwoInstancesServeTheirOwnDirectories(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	dirs := map[string]string{}
	for _, inst := range []string{"x", "y"} {
		dir, err := b.AddInstance(inst)
		require.NoError(t, err)
		dirs[inst] = dir
		enable(t, b, inst)
		session(t, b, inst)
	}
	for inst, dir := range dirs {
		other := dirs[map[string]string{"x": "y", "y": "x"}[inst]]
		p := show(t, b, "virtiofsd@"+inst+".service", "ActiveState", "StatusText")
		assert.Equal(t, "active", p["ActiveState"], inst)
		// For people: the status names the socket and the share.
		assert.Contains(t, p["StatusText"], "on /run/virtiofsd/"+inst+".sock, sharing "+dir+" ", inst)
		assert.NotContains(t, p["StatusText"], other, inst)
		st, err := b.LiveState(context.Background(), inst)
		require.NoError(t, err)
		if assert.NotNil(t, st, inst) {
			assert.Equal(t, dir, st.SharedDir, inst)
			assert.Equal(t, "/run/virtiofsd/"+inst+".sock", st.Socket, inst)
		}
		// virtiofsd itself was given that directory.
		cmdline := run(t, b, "cat", "/proc/"+strconv.Itoa(virtiofsdPID(t, b, inst))+"/cmdline")
		assert.Contains(t, strings.Split(cmdline, "\x00"), leg.SharedDirArg(dir), inst)
	}
	assert.NotEqual(t, virtiofsdPID(t, b, "x"), virtiofsdPID(t, b, "y"))
}
