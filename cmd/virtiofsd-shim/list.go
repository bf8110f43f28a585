package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
)

const listUsage = `Usage: virtiofsd-shim list [flags] [NAME...]

Lists virtiofsd instances, as systemd sees them through its D-Bus API: every
loaded virtiofsd@NAME.socket or .service unit, active or not, and every
NAME.conf of the config folder (shown "not loaded" when no unit is). For
each: the socket and service states, since when, the shim's pid, virtiofsd's
pid, whether a VM is connected or awaited, the shared directory, the shim's
status text, and why a failed unit failed. A broken config is shown in its
row. Connects as root over /run/systemd/private, otherwise (or when that
fails) over the system bus; it only reads.

With --user, your own instances instead: the units of your user manager
(systemctl --user enable --now virtiofsd@vm1.socket) and the files of
~/.config/virtiofsd ($XDG_CONFIG_HOME/virtiofsd), over the manager's socket
$XDG_RUNTIME_DIR/systemd/private, else the session bus. Run it as that
user, with XDG_RUNTIME_DIR set (a login session sets it).

With NAMEs, only those instances; a NAME that systemd does not know and that
has no config file is an error (exit status 64), after the others are shown.
Exit status 69: systemd (with --user, your user manager) cannot be reached.

--json prints {"schema_version": 1, "instances": [...]}: see docs/operations.md.

Examples:
  virtiofsd-shim list
  virtiofsd-shim list vm1 vm2
  virtiofsd-shim list --user                # your rootless instances
  virtiofsd-shim list --json | jq -r '.instances[] | select(.service.client == "connected") | .instance'
`

// connectLister connects to scope's service manager and returns a Lister
// of its instances, configured in dir, that reads their state; the caller
// closes its Bus. systemd out of reach is exit status 69.
func connectLister(ctx context.Context, scope config.Scope, dir string) (*instances.Lister, error) {
	bus, err := sdbus.Connect(ctx, scope, os.Getenv)
	if err != nil {
		return nil, &exitcode.UnavailableError{Err: err}
	}
	rt, _ := scope.RuntimeDir(os.Getenv) // "": no state to read
	return &instances.Lister{Bus: bus, ConfigDir: dir, Scope: scope, RuntimeDir: rt}, nil
}

func listCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("list", listUsage, stderr)
	asJSON := fs.Bool("json", false, "print JSON (schema_version 1) instead of a table")
	dir := fs.String("config-dir", "", "the folder of the `DIR`/NAME.conf files (default "+config.DefaultDir+
		", with --user $XDG_CONFIG_HOME/virtiofsd or ~/.config/virtiofsd)")
	user := fs.Bool("user", false, "your own instances: those of your user manager (systemctl --user) and ~/.config/virtiofsd")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	scope := config.ScopeOf(*user)
	if *dir == "" {
		d, err := scope.ConfigDir(os.Getenv)
		if err != nil {
			return err
		}
		*dir = d
	}
	names := fs.Args()
	for _, n := range names {
		if err := config.ValidInstance(n); err != nil {
			return usageErrorf("list: %v", err)
		}
	}

	l, err := connectLister(ctx, scope, *dir)
	if err != nil {
		return err
	}
	defer l.Bus.Close()
	l.ProcRoot = "/proc"
	list, err := l.List(ctx, names)
	var unknown *instances.UnknownError
	if err != nil && !errors.As(err, &unknown) {
		return err
	}
	var werr error
	if *asJSON {
		werr = instances.WriteJSON(stdout, list)
	} else {
		werr = instances.WriteTable(stdout, list)
	}
	if unknown != nil {
		return usageErrorf("list: %v", unknown)
	}
	return werr
}
