package state

import (
	"path/filepath"
	"strings"
)

// The paths. Every file the shim and its hooks share lives in the scope's
// runtime folder rt: systemd's %t, /run for the system scope and
// $XDG_RUNTIME_DIR for a user's (config.Scope.RuntimeDir). These functions
// are the only place that spells them; the units spell the same with %t and
// %i, and a test holds the two together.

// Dir is the folder of the state files in rt: rt/virtiofsd-shim, which the
// service creates (RuntimeDirectory=virtiofsd-shim) and names to the shim
// in RUNTIME_DIRECTORY.
func Dir(rt string) string { return filepath.Join(rt, "virtiofsd-shim") }

// FromRuntimeDirectory is the runtime folder rt (%t) that a service's
// RUNTIME_DIRECTORY names: systemd sets it to Dir(%t) for
// RuntimeDirectory=virtiofsd-shim (the first of a colon-separated list).
// "" when unset: a shim run by hand, outside systemd, keeps its state in
// memory.
func FromRuntimeDirectory(runtimeDirectory string) string {
	first, _, _ := strings.Cut(runtimeDirectory, ":")
	if first == "" {
		return ""
	}
	return filepath.Dir(first)
}

// Path is the state file of an instance: rt/virtiofsd-shim/NAME.json.
func Path(rt, instance string) string { return filepath.Join(Dir(rt), instance+".json") }

// MarkerPath is the deferred-restart marker of an instance:
// rt/virtiofsd/NAME.restart, beside its socket (virtiofsd@.socket:
// ConditionPathExists=!%t/virtiofsd/%i.restart).
func MarkerPath(rt, instance string) string {
	return filepath.Join(rt, "virtiofsd", instance+".restart")
}
