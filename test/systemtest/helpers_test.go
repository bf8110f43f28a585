package systemtest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// waitFor bounds every wait for a state systemd reaches by itself.
const waitFor = 20 * time.Second

// box boots a private systemd of the leg with the project's units and
// binary for t.
func box(t *testing.T, leg shimbox.Platform) *shimbox.Box {
	t.Helper()
	b := shimbox.New(t, shimbox.Options{Name: "systemtest", Platform: leg}) // skips, saying why, when not root
	if _, err := b.Run(context.Background(), "test", "-x", leg.Virtiofsd()); err != nil {
		// As root this is a missing install step, not a reason to skip.
		t.Fatalf("%s: virtiofsd is not installed at %s: run make test (scripts/deps.sh) or apt-get install qemu-system-common (Debian 12); on Debian 13 the package's dependencies bring it", leg, leg.Virtiofsd())
	}
	return b
}

// children lists the pids of a process's children inside the box, from
// /proc/PID/task/*/children. A thread of the process (the shim's Go runtime
// starts and ends them) may end between the shell's glob and the read: a
// task gone by then is skipped, not an error.
func children(t *testing.T, b *shimbox.Box, pid string) []string {
	t.Helper()
	return strings.Fields(run(t, b, "sh", "-c", `for f in /proc/`+pid+`/task/*/children; do cat "$f" 2>/dev/null; done; true`))
}

// run runs a command inside the box and fails the test if it fails.
func run(t *testing.T, b *shimbox.Box, name string, args ...string) string {
	t.Helper()
	out, err := b.Run(context.Background(), name, args...)
	require.NoError(t, err, "%s %s", name, strings.Join(args, " "))
	return out
}

// systemctl runs systemctl inside the box; it fails the test on error.
func systemctl(t *testing.T, b *shimbox.Box, args ...string) string {
	t.Helper()
	return run(t, b, "systemctl", args...)
}

// show returns properties of a unit of the box's manager or a user's, as
// systemctl show prints them; it fails the test on error.
func show(t *testing.T, m unitprop.Manager, unit string, props ...string) map[string]string {
	t.Helper()
	p, err := unitprop.Show(context.Background(), m, unit, props...)
	require.NoError(t, err)
	return p
}

// state is a unit's ActiveState/SubState.
func state(t *testing.T, m unitprop.Manager, unit string) string {
	t.Helper()
	p := show(t, m, unit, "ActiveState", "SubState")
	return p["ActiveState"] + "/" + p["SubState"]
}

// servedAndActive connects to an instance like a VM and returns once
// virtiofsd has answered within timeout and systemd shows the session
// (shimbox.Box.Session).
func servedAndActive(t *testing.T, b *shimbox.Box, instance string, timeout time.Duration) net.Conn {
	t.Helper()
	c, err := b.Session(instance, timeout)
	require.NoError(t, err, "%s was not served within %s\n%s", instance, timeout, status(b, "virtiofsd@"+instance+".service"))
	return c
}

// waitState waits until the unit is in state want (ActiveState/SubState),
// or in one of the states want lists, separated by "|".
func waitState(t *testing.T, m unitprop.Manager, unit, want string) {
	t.Helper()
	if !assert.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := unitprop.Show(context.Background(), m, unit, "ActiveState", "SubState")
		if assert.NoError(c, err) {
			assert.Contains(c, strings.Split(want, "|"), p["ActiveState"]+"/"+p["SubState"])
		}
	}, waitFor, 20*time.Millisecond, "%s: want %s", unit, want) {
		t.Fatalf("%s", status(m, unit))
	}
}

// waitPhase waits until the instance's running shim publishes phase in
// its typed state (and each of also holds), and returns that state.
func waitPhase(t *testing.T, b *shimbox.Box, instance string, phase shimstate.Phase, also ...func(*shimstate.State) bool) *shimstate.State {
	t.Helper()
	var got *shimstate.State
	ok := assert.EventuallyWithT(t, func(c *assert.CollectT) {
		st, err := b.LiveState(context.Background(), instance)
		if !assert.NoError(c, err) || !assert.NotNil(c, st, "no running shim has published its state") {
			return
		}
		if !assert.Equal(c, phase, st.Phase) {
			return
		}
		for _, f := range also {
			if !assert.True(c, f(st), "state %+v", st) {
				return
			}
		}
		got = st
	}, waitFor, 20*time.Millisecond)
	if !ok {
		t.Fatalf("%s never published phase %s\n%s", instance, phase, status(b, "virtiofsd@"+instance+".service"))
	}
	return got
}

// status is systemctl status and the unit's journal, of the box's manager
// or a user's, for failure messages.
func status(m unitprop.Manager, unit string) string {
	out, _ := m.Systemctl(context.Background(), "status", "--no-pager", "-l", "-n", "50", unit)
	return out
}

// enable enables and starts an instance's socket.
func enable(t *testing.T, b *shimbox.Box, instance string) {
	t.Helper()
	systemctl(t, b, "enable", "--now", "virtiofsd@"+instance+".socket")
	// running: its service already runs, as a STANDBY=yes one does as soon
	// as the socket listens.
	waitState(t, b, "virtiofsd@"+instance+".socket", "active/listening|active/running")
}

// entry is one journal entry of the box.
type entry = shimbox.JournalEntry

// journal returns the journal entries that match the journalctl arguments
// (unit, field matches), after journald has written what it was sent.
func journal(t *testing.T, b *shimbox.Box, args ...string) []entry {
	t.Helper()
	entries, err := b.Journal(context.Background(), args...)
	require.NoError(t, err)
	return entries
}

// waitJournal waits until an entry matching args has a MESSAGE containing
// text, and returns it.
func waitJournal(t *testing.T, b *shimbox.Box, text string, args ...string) entry {
	t.Helper()
	var found entry
	if !assert.EventuallyWithT(t, func(c *assert.CollectT) {
		entries, err := b.Journal(context.Background(), args...)
		if !assert.NoError(c, err) {
			return
		}
		for _, e := range entries {
			if strings.Contains(e["MESSAGE"], text) {
				found = e
				return
			}
		}
		c.Errorf("no entry says %q", text)
	}, waitFor, 50*time.Millisecond, "journal entries (%s)", strings.Join(args, " ")) {
		t.Fatalf("entries:\n%s", strings.Join(shimbox.Messages(journal(t, b, args...)), "\n"))
	}
	return found
}

// virtiofsdProcesses lists the virtiofsd processes in the box, one "pid command line" a line.
func virtiofsdProcesses(t *testing.T, b *shimbox.Box) string {
	t.Helper()
	out, _ := b.Run(context.Background(), "pgrep", "-a", "-x", "virtiofsd")
	return strings.TrimSpace(out)
}

// failToTheStartLimit configures instance x with a SHARED_DIR that does not
// exist (and the config lines extra), enables its socket and connects like
// a VM: every start fails, and the retries end at the start limit, the
// VM's connection hung up and the socket failed. It returns the missing
// directory; fixStartLimit is the admin's fix.
// startLimitWait bounds a crash loop's 30 failing starts on a loaded
// machine.
const startLimitWait = 3 * time.Minute

func failToTheStartLimit(t *testing.T, b *shimbox.Box, extra string) (missing string) {
	t.Helper()
	dir, err := b.Share("x")
	require.NoError(t, err)
	missing = filepath.Join(dir, "missing")
	require.NoError(t, b.Configure("x", "SHARED_DIR="+missing+"\n"+extra))
	// The shipped StartLimitBurst= (30 starts), in a window wide enough
	// that a loaded machine, where each failing start takes longer, still
	// reaches it: the shipped 10 s would let a slow loop run on forever,
	// which is what an admin wants, but not what this scenario is about.
	require.NoError(t, b.WriteFile("/run/systemd/system/virtiofsd@x.service.d/50-test-start-limit.conf",
		[]byte("[Unit]\nStartLimitIntervalSec=1h\n"), 0o644))
	systemctl(t, b, "daemon-reload")
	enable(t, b, "x")

	c, err := net.Dial("unix", b.Socket("x"))
	require.NoError(t, err)
	defer c.Close()
	waitHangUpWithin(t, c, startLimitWait)
	waitState(t, b, "virtiofsd@x.socket", "failed/failed")
	assert.Equal(t, "service-start-limit-hit", show(t, b, "virtiofsd@x.socket", "Result")["Result"])
	return missing
}

// fixStartLimit is the fix: create the directory, reset the failed state,
// start the socket.
func fixStartLimit(t *testing.T, b *shimbox.Box, missing string) {
	t.Helper()
	require.NoError(t, os.Mkdir(missing, 0o755))
	systemctl(t, b, "reset-failed", "virtiofsd@x.socket", "virtiofsd@x.service")
	systemctl(t, b, "start", "virtiofsd@x.socket")
}
