package systemtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// TestSocketGroupAppliesAcrossARestartWithoutCuttingTheSession is the
// admin's way to change a socket's group: edit the config, daemon-reload,
// restart the socket. The VM served across it keeps its share, and the
// socket is root:kvm 0660.
func TestSocketGroupAppliesAcrossARestartWithoutCuttingTheSession(t *testing.T) {
	shimbox.Legs(t, testSocketGroupAppliesAcrossARestartWithoutCuttingTheSession)
}

func testSocketGroupAppliesAcrossARestartWithoutCuttingTheSession(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	// The group as the box's own /etc names it (ids differ by leg).
	out, err := b.Run(t.Context(), "getent", "group", "kvm")
	if err != nil {
		t.Skipf("%s: no kvm group in the box: %v", leg, err)
	}
	gid := strings.Split(out, ":")[2]
	_, err = b.AddInstance("vm1")
	require.NoError(t, err)
	enable(t, b, "vm1")
	vm := servedAndActive(t, b, "vm1", dialTimeout)
	defer vm.Close()
	pid := show(t, b, "virtiofsd@vm1.service", "MainPID")["MainPID"]

	_, err = b.AddInstance("vm1", "SOCKET_GROUP=kvm")
	require.NoError(t, err)
	systemctl(t, b, "daemon-reload")
	require.NoError(t, vhostuser.GetFeatures(vm, dialTimeout), "the session no longer answers after daemon-reload")
	assert.Equal(t, "kvm", show(t, b, "virtiofsd@vm1.socket", "SocketGroup")["SocketGroup"])
	// systemd refuses to start a socket while its service runs: the
	// restart succeeds, its start deferred until the VM leaves (docs/sessions.md).
	systemctl(t, b, "restart", "virtiofsd@vm1.socket")
	assert.Equal(t, "inactive/dead", state(t, b, "virtiofsd@vm1.socket"), "the start waits for the session's end")
	assert.Contains(t, show(t, b, "virtiofsd@vm1.socket", "ConditionResult")["ConditionResult"], "no")

	for i := 0; i < 10; i++ {
		require.NoError(t, vhostuser.GetFeatures(vm, dialTimeout), "request %d after the socket's restart", i)
	}
	assert.Equal(t, pid, show(t, b, "virtiofsd@vm1.service", "MainPID")["MainPID"], "the session's shim changed")
	waitJournal(t, b, "this session goes on until the VM disconnects", "-u", "virtiofsd@vm1.service")

	// The VM leaves; its session ends, the socket listens again with the
	// new settings, and the next session comes from it.
	require.NoError(t, vm.Close())
	waitState(t, b, "virtiofsd@vm1.socket", "active/listening")
	waitState(t, b, "virtiofsd@vm1.service", "inactive/dead")
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result")["Result"])
	_, err = os.Stat(b.Path(shimstate.MarkerPath("/run", "vm1")))
	assert.ErrorIs(t, err, os.ErrNotExist, "the marker of the deferred start is gone")
	fi, err := os.Stat(b.Socket("vm1"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	st, ok := fi.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	assert.Equal(t, gid, strconv.Itoa(int(st.Gid)))
	assert.Equal(t, uint32(0), st.Uid)

	next := servedAndActive(t, b, "vm1", dialTimeout)
	require.NoError(t, next.Close())
}

// TestStoppingTheSocketLeavesAServingSessionAlone: stop (and disable --now)
// of the socket ends no VM's session; the socket file goes away.
func TestStoppingTheSocketLeavesAServingSessionAlone(t *testing.T) {
	shimbox.Legs(t, testStoppingTheSocketLeavesAServingSessionAlone)
}

func testStoppingTheSocketLeavesAServingSessionAlone(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("vm1")
	require.NoError(t, err)
	enable(t, b, "vm1")
	vm := servedAndActive(t, b, "vm1", dialTimeout)
	defer vm.Close()
	systemctl(t, b, "disable", "--now", "virtiofsd@vm1.socket")
	assert.Equal(t, "inactive/dead", state(t, b, "virtiofsd@vm1.socket"))
	_, err = os.Stat(b.Socket("vm1"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, vhostuser.GetFeatures(vm, dialTimeout), "the session no longer answers once its socket stopped")
	assert.Equal(t, "active/running", state(t, b, "virtiofsd@vm1.service"))
	require.NoError(t, vm.Close())
	waitState(t, b, "virtiofsd@vm1.service", "inactive/dead")
	assert.Empty(t, virtiofsdProcesses(t, b))
}

// TestGeneratorSkipsABrokenConfigAndGeneratesTheOthers: one config the
// generator refuses does not keep the others' settings from systemd.
func TestGeneratorSkipsABrokenConfigAndGeneratesTheOthers(t *testing.T) {
	shimbox.Legs(t, testGeneratorSkipsABrokenConfigAndGeneratesTheOthers)
}

func testGeneratorSkipsABrokenConfigAndGeneratesTheOthers(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("good", "SOCKET_GROUP=kvm", "SOCKET_MODE=0640")
	require.NoError(t, err)
	_, err = b.AddInstance("bad", "SOCKET_GROUP=kvm", "SOCKET_MODE=rw")
	require.NoError(t, err)
	odd, err := b.Share("my vm%1")
	require.NoError(t, err)
	require.NoError(t, b.Configure("odd", "SHARED_DIR=\""+odd+"\"\n"))
	systemctl(t, b, "daemon-reload")

	p := show(t, b, "virtiofsd@good.socket", "SocketGroup", "SocketMode")
	assert.Equal(t, "kvm", p["SocketGroup"])
	assert.Equal(t, "0640", p["SocketMode"])
	p = show(t, b, "virtiofsd@bad.socket", "SocketGroup", "SocketMode", "DropInPaths")
	assert.Equal(t, "", p["SocketGroup"])
	assert.Equal(t, "0660", p["SocketMode"])
	assert.Equal(t, "", p["DropInPaths"])
	assert.Empty(t, show(t, b, "virtiofsd@bad.service", "DropInPaths")["DropInPaths"])

	// RequiresMountsFor= names the share, blank and "%" included.
	assert.Contains(t, show(t, b, "virtiofsd@odd.service", "RequiresMountsFor")["RequiresMountsFor"], `"`+odd+`"`)
	good := show(t, b, "virtiofsd@good.service", "RequiresMountsFor")["RequiresMountsFor"]
	assert.Contains(t, strings.Fields(good), filepath.Join(b.Root, "good"))

	// The generator's reason reaches the journal.
	waitJournal(t, b, "skipping virtiofsd@bad: /etc/virtiofsd/bad.conf:3: SOCKET_MODE=rw", "SYSLOG_IDENTIFIER=virtiofsd-shim-generator")

	// What the generator said, as check shows it.
	out, err := b.Run(t.Context(), "/usr/libexec/virtiofsd-shim", "generate", "--dry-run")
	assert.NoError(t, err)
	assert.Contains(t, out, "skipping virtiofsd@bad: /etc/virtiofsd/bad.conf:3: SOCKET_MODE=rw")
	assert.Contains(t, out, "### /run/systemd/generator/virtiofsd@good.socket.d/50-virtiofsd-shim.conf")
	assert.True(t, strings.Contains(out, "SocketMode=0640"), out)
}

// TestAnInstanceWithoutVirtiofsdsSandboxGetsAReadOnlySystem: the unit
// leaves ProtectSystem= to virtiofsd's own sandbox, which keeps a guest
// away from /usr and /etc; an instance with SANDBOX=none, where virtiofsd
// runs in the host's root, gets ProtectSystem=full from the generator and
// is served with it (the Rust virtiofsd: the C one has no SANDBOX=none).
func TestAnInstanceWithoutVirtiofsdsSandboxGetsAReadOnlySystem(t *testing.T) {
	shimbox.Legs(t, testAnInstanceWithoutVirtiofsdsSandboxGetsAReadOnlySystem)
}

func testAnInstanceWithoutVirtiofsdsSandboxGetsAReadOnlySystem(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("sandboxed")
	require.NoError(t, err)
	_, err = b.AddInstance("unsandboxed", "SANDBOX=none")
	require.NoError(t, err)
	systemctl(t, b, "daemon-reload")
	assert.Equal(t, "no", show(t, b, "virtiofsd@sandboxed.service", "ProtectSystem")["ProtectSystem"])
	assert.Equal(t, "full", show(t, b, "virtiofsd@unsandboxed.service", "ProtectSystem")["ProtectSystem"])
	if !leg.Rust() {
		return
	}

	systemctl(t, b, "start", "virtiofsd@unsandboxed.socket")
	c, err := vhostuser.Probe(b.Socket("unsandboxed"), 10*time.Second)
	require.NoError(t, err, "%s", systemctl(t, b, "status", "--no-pager", "virtiofsd@unsandboxed.service"))
	defer c.Close()
	pid := virtiofsdPID(t, b, "unsandboxed")
	mounts := run(t, b, "cat", fmt.Sprintf("/proc/%d/mountinfo", pid))
	for _, dir := range []string{"/usr", "/etc"} {
		found := false
		for _, line := range strings.Split(mounts, "\n") {
			if f := strings.Fields(line); len(f) > 5 && f[4] == dir {
				found = true
				assert.Contains(t, strings.Split(f[5], ","), "ro", "virtiofsd's %s: %s", dir, line)
			}
		}
		assert.True(t, found, "virtiofsd (pid %d) has %s as a mount of its own:\n%s", pid, dir, mounts)
	}
}

// TestStandbyWaitsBeforeTheVMAndAfterEachSession: with STANDBY=yes a
// virtiofsd waits on the socket from enable --now on, each VM connection is
// served by its own virtiofsd, and the next one waits as soon as the last
// VM left; stopping the socket stops the standby.
func TestStandbyWaitsBeforeTheVMAndAfterEachSession(t *testing.T) {
	shimbox.Legs(t, testStandbyWaitsBeforeTheVMAndAfterEachSession)
}

func testStandbyWaitsBeforeTheVMAndAfterEachSession(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("sb", "STANDBY=yes")
	require.NoError(t, err)
	systemctl(t, b, "daemon-reload")
	enable(t, b, "sb")
	const unit = "virtiofsd@sb.service"

	waitStandby := func(prev string) string {
		t.Helper()
		st := waitPhase(t, b, "sb", shimstate.Waiting, func(s *shimstate.State) bool { return s.Standby && strconv.Itoa(s.VirtiofsdPID) != prev })
		pid := strconv.Itoa(st.VirtiofsdPID)
		assert.Equal(t, "active/running", state(t, b, unit))
		assert.Contains(t, virtiofsdProcesses(t, b), pid+" ")
		return pid
	}
	standby := waitStandby("")
	mainPID := show(t, b, unit, "MainPID")["MainPID"]

	var pids []string
	for session := 1; session <= 2; session++ {
		vm := servedAndActive(t, b, "sb", dialTimeout)
		served := servingPID(t, b, "sb")
		assert.Equal(t, standby, served, "session %d was not served by the waiting virtiofsd", session)
		pids = append(pids, served)
		require.NoError(t, vm.Close())
		standby = waitStandby(served)
	}
	assert.NotEqual(t, pids[0], pids[1], "two sessions, one virtiofsd")
	assert.Equal(t, mainPID, show(t, b, unit, "MainPID")["MainPID"], "the sessions ran in one service run")

	// Each session has its own VIRTIOFSD_SESSION on virtiofsd's lines.
	sessions := map[string]string{}
	for _, e := range journal(t, b, "-u", unit, "SYSLOG_IDENTIFIER=virtiofsd") {
		if strings.Contains(e["MESSAGE"], leg.ConnectedLine()) {
			sessions[e["VIRTIOFSD_SESSION"]] = e["VIRTIOFSD_PID"]
		}
	}
	assert.Len(t, sessions, 2, "%v", sessions)
	assert.NotContains(t, sessions, "")

	// A restart of the socket brings a standby on the new socket.
	systemctl(t, b, "restart", "virtiofsd@sb.socket")
	standby = waitStandby(standby)
	vm := servedAndActive(t, b, "sb", dialTimeout)
	assert.Equal(t, standby, servingPID(t, b, "sb"))
	require.NoError(t, vm.Close())
	waitStandby(standby)

	// A restart during a session: the session goes on, and once it ends
	// the socket listens again with a standby on it.
	vm = servedAndActive(t, b, "sb", dialTimeout)
	systemctl(t, b, "restart", "virtiofsd@sb.socket")
	require.NoError(t, vhostuser.GetFeatures(vm, dialTimeout), "the session no longer answers after the socket's restart")
	require.NoError(t, vm.Close())
	waitState(t, b, "virtiofsd@sb.socket", "active/running")
	standby = waitStandby(standby)
	vm = servedAndActive(t, b, "sb", dialTimeout)
	assert.Equal(t, standby, servingPID(t, b, "sb"))
	require.NoError(t, vm.Close())
	waitStandby(standby)

	systemctl(t, b, "stop", "virtiofsd@sb.socket")
	waitState(t, b, unit, "inactive/dead")
	assert.Equal(t, "success", show(t, b, unit, "Result")["Result"])
	assert.Empty(t, virtiofsdProcesses(t, b))
}

// servingPID waits until the instance serves, and returns the pid of the
// virtiofsd serving, from the shim's typed state.
func servingPID(t *testing.T, b *shimbox.Box, instance string) string {
	t.Helper()
	return strconv.Itoa(waitPhase(t, b, instance, shimstate.Serving).VirtiofsdPID)
}

// TestStandbyThatCannotStartStopsAtTheStartLimit: a STANDBY=yes instance
// whose service fails at every start ends failed at the start limit, as
// without standby, and a standby virtiofsd killed while waiting ends its
// service failed; the next connection is served.
func TestStandbyThatCannotStartStopsAtTheStartLimit(t *testing.T) {
	shimbox.Legs(t, testStandbyThatCannotStartStopsAtTheStartLimit)
}

func testStandbyThatCannotStartStopsAtTheStartLimit(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	missing := failToTheStartLimit(t, b, "STANDBY=yes\n")
	assert.Equal(t, "failed", show(t, b, "virtiofsd@x.service", "ActiveState")["ActiveState"])

	// Fixed: the standby comes back; killed, it ends its run failed, and
	// the next VM is served all the same.
	fixStartLimit(t, b, missing)
	pid := strconv.Itoa(waitPhase(t, b, "x", shimstate.Waiting).VirtiofsdPID)
	run(t, b, "kill", "-9", pid)
	waitState(t, b, "virtiofsd@x.service", "failed/failed")
	vm := servedAndActive(t, b, "x", dialTimeout)
	require.NoError(t, vm.Close())
	waitPhase(t, b, "x", shimstate.Waiting)
}

// TestReleaseWithNoServiceDoesNothing: the socket's ExecStopPre= succeeds
// when no service runs.
func TestReleaseWithNoServiceDoesNothing(t *testing.T) {
	shimbox.Legs(t, testReleaseWithNoServiceDoesNothing)
}

func testReleaseWithNoServiceDoesNothing(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")
	run(t, b, "/usr/libexec/virtiofsd-shim", "release", "--instance=x")
	systemctl(t, b, "stop", "virtiofsd@x.socket")
	assert.Contains(t, show(t, b, "virtiofsd@x.socket", "ExecStopPre")["ExecStopPre"], "code=exited ; status=0 }")
	assert.Equal(t, "inactive/dead", state(t, b, "virtiofsd@x.service"))
}
