package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Scope is one service manager's set of instances: the system manager's,
// configured in /etc/virtiofsd, or a user manager's, configured in
// $XDG_CONFIG_HOME/virtiofsd. Whatever depends on the manager (the folder,
// whose files are trusted, the bus to reach it) is a field here, so one code
// path serves both.
type Scope struct {
	// User is true for a user manager's instances (systemctl --user).
	User bool
	// Dir is the folder of the instance configs.
	Dir string
}

// SystemScope is the system manager's: configs in DefaultDir.
func SystemScope() Scope { return Scope{Dir: DefaultDir} }

// UserScope is the calling user's: configs in $XDG_CONFIG_HOME/virtiofsd,
// or ~/.config/virtiofsd. getenv is os.Getenv outside tests.
func UserScope(getenv func(string) string) (Scope, error) {
	base := getenv("XDG_CONFIG_HOME")
	if base == "" || !filepath.IsAbs(base) {
		home := getenv("HOME")
		if home == "" || !filepath.IsAbs(home) {
			return Scope{}, errors.New("user scope: neither XDG_CONFIG_HOME nor HOME is an absolute path: set HOME")
		}
		base = filepath.Join(home, ".config")
	}
	return Scope{User: true, Dir: filepath.Join(base, "virtiofsd")}, nil
}

// ScopeFromEnv is the scope systemd names in SYSTEMD_SCOPE ("system" or
// "user"; systemd 251 and later set it for generators), the system's when
// unset.
func ScopeFromEnv(getenv func(string) string) (Scope, error) {
	switch s := getenv("SYSTEMD_SCOPE"); s {
	case "", "system":
		return SystemScope(), nil
	case "user":
		return UserScope(getenv)
	default:
		return Scope{}, fmt.Errorf("SYSTEMD_SCOPE=%q: want system or user", s)
	}
}

// Name is "system" or "user".
func (s Scope) Name() string {
	if s.User {
		return "user"
	}
	return "system"
}

// Instances lists the instances configured in the scope's folder: the
// names of its *.conf files, sorted, valid or not. A missing folder has none.
func (s Scope) Instances() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list configs: %w", err)
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
