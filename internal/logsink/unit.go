package logsink

import (
	"os"
	"strings"
)

// FieldUnit names, in every entry the shim sends, the unit the entry is
// about: its own. journald attributes a native entry to a unit
// (_SYSTEMD_UNIT) by reading the sender's cgroup from /proc when the entry
// arrives, and a shim that logs its error and exits at once is often gone
// by then: the entry would be missing from `journalctl -u`. journalctl -u
// also matches OBJECT_SYSTEMD_UNIT=UNIT in entries from root (_UID=0, which
// journald takes from the socket's credentials, not from /proc), the way
// systemd's own daemons log about a unit.
const FieldUnit = "OBJECT_SYSTEMD_UNIT"

// FieldUserUnit is FieldUnit for a user instance: journalctl --user -u
// honours OBJECT_SYSTEMD_UNIT from root only, but matches USER_UNIT=UNIT in
// entries from the user's own uid (_UID, from the socket's credentials), the
// way the user's manager logs about its units.
const FieldUserUnit = "USER_UNIT"

// SelfUnit returns the systemd unit this process runs in, or "" if it runs
// in none, from /proc/self/cgroup and, for the root of systemd's tree,
// /proc/1/cgroup.
func SelfUnit() string {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	init, _ := os.ReadFile("/proc/1/cgroup") // unreadable: the tree starts at "/"
	return unitOf(string(self), string(init))
}

// SelfUserUnit returns the unit of a user's manager this process runs in,
// or "" if it runs in none: the unit below user@UID.service, as
// sd_pid_get_user_unit finds it.
func SelfUserUnit() string {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	init, _ := os.ReadFile("/proc/1/cgroup")
	return userUnitOf(string(self), string(init))
}

// userUnitOf is unitOf for the units of a user's manager: the first unit
// below the user@UID.service that runs it.
func userUnitOf(self, init string) string {
	comps := unitPath(self, init)
	for i, c := range comps {
		if strings.HasPrefix(c, "user@") && strings.HasSuffix(c, ".service") {
			return firstUnit(comps[i+1:])
		}
	}
	return ""
}

// unitOf finds the unit of a process from the contents of its
// /proc/PID/cgroup and of PID 1's, as sd_pid_get_unit does: the process's
// path in systemd's hierarchy, relative to the root of systemd's tree (PID
// 1's path without "/init.scope"; not "/" when systemd runs in a container
// without a cgroup namespace), and there the first component below the
// slices, if it is a service or a scope.
func unitOf(self, init string) string { return firstUnit(unitPath(self, init)) }

// unitPath is a process's path in systemd's hierarchy, relative to the root
// of systemd's tree, split into its components; nil when there is none.
func unitPath(self, init string) []string {
	path, ok := systemdPath(self)
	if !ok {
		return nil
	}
	if root, ok := systemdPath(init); ok {
		root = strings.TrimSuffix(strings.TrimSuffix(root, "/init.scope"), "/")
		if root != "" && strings.HasPrefix(path, root+"/") {
			path = path[len(root):]
		}
	}
	return strings.Split(strings.Trim(path, "/"), "/")
}

// firstUnit is the first component below the slices, if it is a service or
// a scope.
func firstUnit(comps []string) string {
	for _, c := range comps {
		if strings.HasSuffix(c, ".slice") {
			continue
		}
		if strings.HasSuffix(c, ".service") || strings.HasSuffix(c, ".scope") {
			return c
		}
		break
	}
	return ""
}

// systemdPath returns the path in systemd's own hierarchy from the contents
// of a /proc/PID/cgroup file: the "name=systemd" line of a legacy or hybrid
// host, else the unified "0::" line.
func systemdPath(content string) (string, bool) {
	var unified string
	var haveUnified bool
	for _, line := range strings.Split(content, "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case f[1] == "name=systemd":
			return f[2], true
		case f[0] == "0" && f[1] == "":
			unified, haveUnified = f[2], true
		}
	}
	return unified, haveUnified
}
