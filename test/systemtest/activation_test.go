package systemtest

import (
	"context"
	"net"
	"os"
	"os/user"
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
)

// dialTimeout bounds a connection's wait for a vhost-user reply.
const dialTimeout = 10 * time.Second

func TestEnablingTheSocketCreatesItWithMode0660(t *testing.T) {
	shimbox.Legs(t, testEnablingTheSocketCreatesItWithMode0660)
}

func testEnablingTheSocketCreatesItWithMode0660(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")

	fi, err := os.Stat(b.Socket("x"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket, fi.Mode().Type())
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	assert.Equal(t, "enabled", strings.TrimSpace(systemctl(t, b, "is-enabled", "virtiofsd@x.socket")))
	// Nothing runs until a VM connects.
	assert.Equal(t, "inactive/dead", state(t, b, "virtiofsd@x.service"))
	assert.Empty(t, virtiofsdProcesses(t, b))
}

// TestServiceIsActiveOnlyOnceVirtiofsdIsReady holds virtiofsd back behind a
// gate (a wrapper script that waits for a file) and checks that systemd
// reports the service as starting, not running, until virtiofsd has printed
// its readiness line and the shim said READY=1.
func TestServiceIsActiveOnlyOnceVirtiofsdIsReady(t *testing.T) {
	shimbox.Legs(t, testServiceIsActiveOnlyOnceVirtiofsdIsReady)
}

func testServiceIsActiveOnlyOnceVirtiofsdIsReady(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	const wrapper = "/etc/virtiofsd/gated-virtiofsd"
	const gate = "/etc/virtiofsd/open-the-gate"
	require.NoError(t, b.WriteFile(wrapper, []byte("#!/bin/sh\n"+
		"while [ ! -e "+gate+" ]; do sleep 0.05; done\n"+
		"exec "+leg.Virtiofsd()+` "$@"`+"\n"), 0o755))
	dir, err := b.AddInstance("x", "VIRTIOFSD="+wrapper, "FLAVOR="+leg.Flavor())
	require.NoError(t, err)
	enable(t, b, "x")

	type dialed struct {
		c   net.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := b.Dial("x", waitFor)
		done <- dialed{c, err}
	}()

	// The connection started the service; virtiofsd is held at the gate.
	waitState(t, b, "virtiofsd@x.service", "activating/start")
	assert.Equal(t, "notify", show(t, b, "virtiofsd@x.service", "Type")["Type"])
	waitPhase(t, b, "x", shimstate.Starting, func(s *shimstate.State) bool { return s.VirtiofsdPID != 0 })
	select {
	case d := <-done:
		t.Fatalf("the connection was answered before virtiofsd ran: %v", d.err)
	default:
	}
	assert.Equal(t, "activating/start", state(t, b, "virtiofsd@x.service"))

	require.NoError(t, b.WriteFile(gate, nil, 0o644))
	d := <-done
	require.NoError(t, d.err, status(b, "virtiofsd@x.service"))
	defer d.c.Close()
	// Answered, so virtiofsd printed its line: READY=1 follows.
	waitState(t, b, "virtiofsd@x.service", "active/running")
	st, err := b.LiveState(context.Background(), "x")
	require.NoError(t, err)
	require.NotNil(t, st, "the running shim publishes its state")
	assert.Contains(t, []shimstate.Phase{shimstate.Waiting, shimstate.Serving}, st.Phase)
	assert.Equal(t, dir, st.SharedDir)
}

func TestHangingUpEndsTheSessionAndTheSocketListensAgain(t *testing.T) {
	shimbox.Legs(t, testHangingUpEndsTheSessionAndTheSocketListensAgain)
}

func testHangingUpEndsTheSessionAndTheSocketListensAgain(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	enable(t, b, "x")

	for session := 1; session <= 2; session++ {
		c := servedAndActive(t, b, "x", dialTimeout)
		st := waitPhase(t, b, "x", shimstate.Serving)
		assert.Equal(t, "/run/virtiofsd/x.sock", st.Socket)
		assert.Equal(t, "active/running", state(t, b, "virtiofsd@x.socket"), "session %d", session)

		require.NoError(t, c.Close())
		waitState(t, b, "virtiofsd@x.service", "inactive/dead")
		p := show(t, b, "virtiofsd@x.service", "Result", "ExecMainStatus")
		assert.Equal(t, "success", p["Result"], "session %d", session)
		assert.Equal(t, "0", p["ExecMainStatus"], "session %d", session)
		waitState(t, b, "virtiofsd@x.socket", "active/listening")
		assert.Empty(t, virtiofsdProcesses(t, b), "session %d", session)
	}
}

// TestSocketGroupKeyLetsQEMUsGroupConnect follows docs/install.md: SOCKET_GROUP=
// in the config, applied by the generator on daemon-reload, gives the socket
// to QEMU's group.
func TestSocketGroupKeyLetsQEMUsGroupConnect(t *testing.T) {
	shimbox.Legs(t, testSocketGroupKeyLetsQEMUsGroupConnect)
}

func testSocketGroupKeyLetsQEMUsGroupConnect(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	// The group as the box's own /etc names it (ids differ by leg).
	out, err := b.Run(t.Context(), "getent", "group", "kvm")
	if err != nil {
		t.Skipf("%s: no kvm group in the box: %v", leg, err)
	}
	grp := &user.Group{Name: "kvm", Gid: strings.Split(out, ":")[2]}
	_, err = b.AddInstance("x", "SOCKET_GROUP=kvm")
	require.NoError(t, err)
	systemctl(t, b, "daemon-reload")
	enable(t, b, "x")

	fi, err := os.Stat(b.Socket("x"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	st, ok := fi.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	assert.Equal(t, grp.Gid, strconv.Itoa(int(st.Gid)))
	assert.Equal(t, uint32(0), st.Uid)

	// A user of the group connects and is served; one outside is refused.
	// The client is this test binary (TestMain), copied where the box
	// sees it at the same path on every leg and nobody may run it.
	self, err := os.Executable()
	require.NoError(t, err)
	dir, err := os.MkdirTemp("/var/tmp", "systemtest-client-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin, err := os.ReadFile(self)
	require.NoError(t, err)
	client := filepath.Join(dir, "client")
	require.NoError(t, os.WriteFile(client, bin, 0o755))
	as := func(groups string) string {
		out, err := b.Run(t.Context(), "setpriv", "--reuid=65534", "--regid=65534", groups,
			"env", clientEnv+"=/run/virtiofsd/x.sock", client)
		require.NoError(t, err, out)
		return strings.TrimSpace(out)
	}
	assert.Equal(t, "refused", as("--clear-groups"))
	assert.Equal(t, "served", as("--groups="+grp.Gid))
}
