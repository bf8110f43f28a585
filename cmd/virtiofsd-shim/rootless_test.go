package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// TestCheckUserReadsTheUsersConfigAndNamesTheirSocket: with --user, the
// config comes from $XDG_CONFIG_HOME/virtiofsd and the socket is in
// $XDG_RUNTIME_DIR/virtiofsd (whoever runs it; as a user other than root the
// plan is also rootless, which the system test covers).
func TestCheckUserReadsTheUsersConfigAndNamesTheirSocket(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	xdg := t.TempDir()
	require.NoError(t, os.Chmod(xdg, 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(xdg, "virtiofsd"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(xdg, "virtiofsd", "vm1.conf"), []byte("SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\n"), 0o644))
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	code, out, stderr := shim(t, "check", "--user", "vm1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, filepath.Join(xdg, "virtiofsd", "vm1.conf"))
	assert.Contains(t, out, "/run/user/4242/virtiofsd/vm1.sock (virtiofsd@vm1.socket, systemctl --user)")

	code, _, stderr = shim(t, "check", "--user", "vm2")
	assert.Equal(t, exitcode.Config, code)
	assert.Contains(t, stderr, filepath.Join(xdg, "virtiofsd", "vm2.conf")+": no such file")
}

func TestListUserWithoutASessionSaysWhatToDo(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	code, _, stderr := shim(t, "list", "--user")
	assert.Equal(t, exitcode.Unavailable, code)
	assert.Contains(t, stderr, "/systemd/private")
	assert.Contains(t, stderr, "session bus unix:path=")
	assert.Contains(t, stderr, "list --user asks your own systemd user manager")
}

// TestCheckUserShowsTheUserGeneratorsDropIns: check --user compares with the
// user manager's generator folder ($XDG_RUNTIME_DIR/systemd/generator), whose
// drop-ins have SOCKET_MODE but not SOCKET_GROUP, and says so.
func TestCheckUserShowsTheUserGeneratorsDropIns(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	xdg, rt := t.TempDir(), t.TempDir()
	require.NoError(t, os.Chmod(xdg, 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(xdg, "virtiofsd"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(xdg, "virtiofsd", "vm1.conf"),
		[]byte("SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nSOCKET_MODE=0600\nSOCKET_GROUP=kvm\nSTANDBY=yes\n"), 0o644))
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv("XDG_RUNTIME_DIR", rt)
	gen := filepath.Join(rt, "systemd", "generator")
	code, out, stderr := shim(t, "check", "--user", "vm1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "The generator (systemctl --user daemon-reload) makes of it:")
	assert.Contains(t, out, "### "+gen+"/virtiofsd@vm1.socket.d/50-virtiofsd-shim.conf\n")
	assert.Contains(t, out, "[Socket]\nSocketMode=0600\nExecStartPost=-/usr/libexec/virtiofsd-shim standby --user --instance=%i\n")
	assert.NotContains(t, out, "SocketGroup=")
	assert.Contains(t, out, "warning: SOCKET_USER and SOCKET_GROUP are ignored for a user instance")
	assert.Contains(t, out, "does not exist: systemd has not applied this config yet; run systemctl --user daemon-reload "+
		"(and check that /usr/lib/systemd/user-generators/virtiofsd-shim-generator is installed)")

	// What the user generator writes is what check expects: nothing pending.
	code, _, stderr = shim(t, "generate", "--user", gen)
	require.Equal(t, 0, code, stderr)
	_, out, _ = shim(t, "check", "--user", "vm1")
	assert.NotContains(t, out, "warning: "+gen)
}
