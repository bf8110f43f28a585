package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) Env { return func(k string) string { return m[k] } }

func TestScopePaths(t *testing.T) {
	user := env(map[string]string{"HOME": "/home/ann", "XDG_RUNTIME_DIR": "/run/user/1000"})
	for _, tc := range []struct {
		name  string
		scope Scope
		env   Env
		conf  string
		sock  string
		priv  string
		bus   string
	}{
		{"system", System, env(nil), "/etc/virtiofsd", "/run/virtiofsd/vm1.sock", "/run/systemd/private", "unix:path=/run/dbus/system_bus_socket"},
		{"user, defaults", User, user, "/home/ann/.config/virtiofsd", "/run/user/1000/virtiofsd/vm1.sock", "/run/user/1000/systemd/private", "unix:path=/run/user/1000/bus"},
		{"user, XDG_CONFIG_HOME and session bus", User,
			env(map[string]string{"HOME": "/home/ann", "XDG_CONFIG_HOME": "/cfg", "XDG_RUNTIME_DIR": "/r", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/b"}),
			"/cfg/virtiofsd", "/r/virtiofsd/vm1.sock", "/r/systemd/private", "unix:path=/b"},
		{"user, relative XDG_CONFIG_HOME is ignored", User,
			env(map[string]string{"HOME": "/home/ann", "XDG_CONFIG_HOME": "cfg", "XDG_RUNTIME_DIR": "/r"}),
			"/home/ann/.config/virtiofsd", "/r/virtiofsd/vm1.sock", "/r/systemd/private", "unix:path=/r/bus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, got := range []struct {
				want string
				f    func() (string, error)
			}{
				{tc.conf, func() (string, error) { return tc.scope.ConfigDir(tc.env) }},
				{tc.sock, func() (string, error) { return tc.scope.SocketPath(tc.env, "vm1") }},
				{tc.priv, func() (string, error) { return tc.scope.PrivateBus(tc.env) }},
				{tc.bus, func() (string, error) { return tc.scope.Bus(tc.env) }},
			} {
				v, err := got.f()
				require.NoError(t, err)
				assert.Equal(t, got.want, v)
			}
		})
	}
}

func TestUserScopeWithoutItsEnvironmentSaysWhatToSet(t *testing.T) {
	_, err := User.ConfigDir(env(nil))
	assert.ErrorContains(t, err, "XDG_CONFIG_HOME nor HOME")
	_, err = User.SocketPath(env(map[string]string{"HOME": "/h"}), "vm1")
	assert.ErrorContains(t, err, "XDG_RUNTIME_DIR is not set")
}

func TestScopeTrust(t *testing.T) {
	for _, tc := range []struct {
		scope     Scope
		uid, euid uint32
		want      bool
	}{
		{System, 0, 0, true},
		{System, 0, 1000, true},
		{System, 1000, 1000, true},
		{System, 1001, 1000, false},
		{User, 1000, 1000, true},
		{User, 0, 1000, false}, // root's file in a user's folder is not the user's to vouch for
		{User, 1001, 1000, false},
	} {
		t.Run(fmt.Sprintf("%v/%d/%d", tc.scope, tc.uid, tc.euid), func(t *testing.T) {
			assert.Equal(t, tc.want, tc.scope.trusted(tc.uid, tc.euid))
		})
	}
}

// TestLoadInUserScopeRefusesAFileOfSomeoneElse: as root, a file owned by
// root is someone else's for a user-scope load only when root is not the
// process; so it uses a file owned by another uid, which needs root to chown.
func TestLoadInUserScopeRefusesAFileOfSomeoneElse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns a config file to another user")
	}
	dir := t.TempDir()
	share := t.TempDir()
	path := filepath.Join(dir, "vm1.conf")
	require.NoError(t, os.WriteFile(path, []byte("SHARED_DIR="+share+"\n"), 0o644))
	_, err := LoadIn(User, dir, "vm1")
	require.NoError(t, err, "the user's own file")
	require.NoError(t, os.Chown(path, 4242, 4242))
	_, err = LoadIn(User, dir, "vm1")
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Msg, "owned by uid 4242, not by you (uid 0)")
	_, err = LoadIn(System, dir, "vm1")
	assert.ErrorContains(t, err, "not root")
}

func TestParseIDMap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want IDMap
		err  string
	}{
		{":0:1000:1:", IDMap{0, 1000, 1}, ""},
		{":0:100000:65536:", IDMap{0, 100000, 65536}, ""},
		{":1000:1000:1:", IDMap{1000, 1000, 1}, ""},
		{":4294967294:0:1:", IDMap{4294967294, 0, 1}, ""},
		{"0:1000:1", IDMap{}, "want :NAMESPACE_ID:HOST_ID:COUNT:"},
		{":0:1000:", IDMap{}, "want :NAMESPACE_ID:HOST_ID:COUNT:"},
		{":0:1000:1:2:", IDMap{}, "want :NAMESPACE_ID:HOST_ID:COUNT:"},
		{":", IDMap{}, "want :NAMESPACE_ID:HOST_ID:COUNT:"},
		{":0:-1:1:", IDMap{}, `"-1" is not a whole number`},
		{":0:+5:1:", IDMap{}, `"+5" is not a whole number`},
		{":0: 5:1:", IDMap{}, `" 5" is not a whole number`},
		{":0:4294967296:1:", IDMap{}, "is not a whole number"},
		{":0:1000:0:", IDMap{}, "COUNT is 0"},
		{":4294967295:0:1:", IDMap{}, "namespace range"},
		{":0:4294967000:1000:", IDMap{}, "host range"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIDMap(tc.in)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.in, got.String())
		})
	}
}

func TestIDMapKeysInAFile(t *testing.T) {
	c, err := Parse(strings.NewReader("SHARED_DIR=/s\nUID_MAP=:0:100000:65536:\nGID_MAP=:0:1000:1:\n"), "vm1.conf")
	require.NoError(t, err)
	assert.Equal(t, &IDMap{0, 100000, 65536}, c.UIDMap)
	assert.Equal(t, &IDMap{0, 1000, 1}, c.GIDMap)
	_, err = Parse(strings.NewReader("SHARED_DIR=/s\nUID_MAP=0:1000:1\n"), "vm1.conf")
	assert.ErrorContains(t, err, "vm1.conf:2: UID_MAP=0:1000:1: want :NAMESPACE_ID:HOST_ID:COUNT:")
}

func TestARunWithoutAnInstanceNameTakesTheSocketsName(t *testing.T) {
	for _, scope := range []Scope{System, User} {
		sock, err := scope.SocketPath(env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}), "vm1")
		require.NoError(t, err)
		assert.Equal(t, "vm1", InstanceOfSocket(sock), scope)
	}
	assert.Equal(t, "vm.1", InstanceOfSocket("/tmp/x/vm.1.sock"))
}

func TestTheGeneratorsDropInsAreInTheManagersRuntimeFolder(t *testing.T) {
	sys, err := System.GeneratorDir(env(nil))
	require.NoError(t, err)
	assert.Equal(t, "/run/systemd/generator", sys)
	usr, err := User.GeneratorDir(env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}))
	require.NoError(t, err)
	assert.Equal(t, "/run/user/1000/systemd/generator", usr)
	_, err = User.GeneratorDir(env(nil))
	assert.ErrorContains(t, err, "XDG_RUNTIME_DIR is not set")
}
