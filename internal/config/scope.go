package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Scope is which service manager an instance belongs to: the system one
// (root, /etc/virtiofsd, /run/virtiofsd) or a user's own (systemctl --user,
// ~/.config/virtiofsd, $XDG_RUNTIME_DIR/virtiofsd). run, check, list and the
// generator take it as a parameter; everything that differs between the two
// is decided here.
type Scope int

// The scopes.
const (
	System Scope = iota
	User
)

func (s Scope) String() string {
	if s == User {
		return "user"
	}
	return "system"
}

// ScopeOf is the scope a --user flag selects: User when given, else System.
func ScopeOf(user bool) Scope {
	if user {
		return User
	}
	return System
}

// Flag is the command-line flag that selects the scope ("--user"), or ""
// for System; systemctl and journalctl take the same one.
func (s Scope) Flag() string {
	if s == User {
		return "--user"
	}
	return ""
}

// Env is how a scope reads the environment (os.Getenv in the program, a map
// in tests).
type Env func(name string) string

// ConfigDir is the folder of the instance configs: DefaultDir for System;
// $XDG_CONFIG_HOME/virtiofsd for User, or ~/.config/virtiofsd when
// XDG_CONFIG_HOME is unset or not absolute (as the XDG Base Directory
// specification says).
func (s Scope) ConfigDir(env Env) (string, error) {
	if s == System {
		return DefaultDir, nil
	}
	if x := env("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "virtiofsd"), nil
	}
	home := env("HOME")
	if !filepath.IsAbs(home) {
		return "", &Error{Msg: "user scope: neither XDG_CONFIG_HOME nor HOME is an absolute path, so ~/.config/virtiofsd cannot be found: " +
			"run under your own user manager (systemctl --user), or pass --config-dir"}
	}
	return filepath.Join(home, ".config", "virtiofsd"), nil
}

// RuntimeDir is the scope's runtime folder: /run for System,
// $XDG_RUNTIME_DIR for User (systemd's %t in both).
func (s Scope) RuntimeDir(env Env) (string, error) {
	if s == System {
		return "/run", nil
	}
	if x := env("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		return x, nil
	}
	return "", errors.New("user scope: XDG_RUNTIME_DIR is not set: log in (or run under systemctl --user), " +
		"or set it to /run/user/$(id -u)")
}

// SocketPath is where virtiofsd@NAME.socket listens: %t/virtiofsd/NAME.sock.
func (s Scope) SocketPath(env Env, instance string) (string, error) {
	rt, err := s.RuntimeDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "virtiofsd", instance+".sock"), nil
}

// InstanceOfSocket is the instance a socket's path names, SocketPath read
// backwards: its file name without ".sock".
func InstanceOfSocket(path string) string {
	return strings.TrimSuffix(filepath.Base(path), ".sock")
}

// PrivateBus is the path of the manager's own socket, which works without a
// D-Bus daemon: /run/systemd/private (root only) or
// $XDG_RUNTIME_DIR/systemd/private (the user only).
func (s Scope) PrivateBus(env Env) (string, error) {
	rt, err := s.RuntimeDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "systemd", "private"), nil
}

// GeneratorDir is the manager's normal generator output folder, where the
// generator writes the instances' drop-ins (systemd.generator(7)):
// %t/systemd/generator.
func (s Scope) GeneratorDir(env Env) (string, error) {
	rt, err := s.RuntimeDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(rt, "systemd", "generator"), nil
}

// Bus is the D-Bus address of the bus the manager is on: the system bus
// (DBUS_SYSTEM_BUS_ADDRESS, else unix:path=/run/dbus/system_bus_socket) or
// the user's session bus (DBUS_SESSION_BUS_ADDRESS, else
// unix:path=$XDG_RUNTIME_DIR/bus).
func (s Scope) Bus(env Env) (string, error) {
	if s == System {
		if a := env("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		return "unix:path=/run/dbus/system_bus_socket", nil
	}
	if a := env("DBUS_SESSION_BUS_ADDRESS"); a != "" {
		return a, nil
	}
	rt, err := s.RuntimeDir(env)
	if err != nil {
		return "", err
	}
	return "unix:path=" + filepath.Join(rt, "bus"), nil
}

// trusted says whether a config file or folder owned by uid may choose what
// the service runs, for a process whose effective uid is euid. System: root
// or the process's own user (a test, or a service with User=). User: the
// user alone, since the service runs as that user and a file of anyone else
// (root included) in their home is not theirs to vouch for.
func (s Scope) trusted(uid, euid uint32) bool {
	if s == User {
		return uid == euid
	}
	return uid == 0 || uid == euid
}

// ownerFix is the advice for a file or folder whose owner is not trusted.
func (s Scope) ownerFix(path string, uid, euid uint32) string {
	if s == User {
		return fmt.Sprintf("owned by uid %d, not by you (uid %d): only your own files may choose what your virtiofsd runs; run chown %d: %s",
			uid, euid, euid, path)
	}
	return fmt.Sprintf("owned by uid %d, not root: whoever owns it chooses what the service runs as root; run chown root: %s", uid, path)
}

// userOnly are the keys only a user instance may set: as root, virtiofsd
// serves every id as it is, so there is nothing to map.
var userOnly = map[string]bool{"UID_MAP": true, "GID_MAP": true}

// Allows tells whether an instance of the scope may set key.
func (s Scope) Allows(key string) bool { return s == User || !userOnly[key] }

// scopeNames are the spellings ParseScope takes.
var scopeNames = map[string]Scope{"system": System, "user": User}

// ParseScope reads "system" or "user".
func ParseScope(s string) (Scope, error) {
	if sc, ok := scopeNames[strings.ToLower(s)]; ok {
		return sc, nil
	}
	return System, fmt.Errorf("unknown scope %q (known: system, user)", s)
}

// ScopeFromEnv is the scope systemd names in SYSTEMD_SCOPE ("system" or
// "user"; systemd 251 and later set it for generators), System when unset.
func ScopeFromEnv(env Env) (Scope, error) {
	s := env("SYSTEMD_SCOPE")
	if s == "" {
		return System, nil
	}
	sc, ok := scopeNames[s]
	if !ok {
		return System, fmt.Errorf("SYSTEMD_SCOPE=%q: want system or user (as systemd sets it for generators)", s)
	}
	return sc, nil
}

// Instances lists the instances configured in dir: the names of its *.conf
// files, sorted, valid or not. A missing folder has none.
func Instances(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list configs in %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".conf"); ok && name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}
