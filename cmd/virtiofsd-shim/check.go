package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/kballard/go-shellquote"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
)

const checkUsage = `Usage: virtiofsd-shim check [flags] NAME

Validates instance NAME offline, as virtiofsd@NAME.service would start it:
its config file, the shared directory, the virtiofsd binary and flavor, and
the arguments. Prints the exact command line run would start, and the unit
drop-ins the generator makes of the config (socket owner, group and mode,
standby, RequiresMountsFor=), with a warning when they differ from what
systemd loaded at its last daemon-reload, or when SOCKET_MODE lets more than
the socket's owner and group connect. Exits non-zero with the cause on any
problem (see the exit status table in --help); warnings do not change it.

Examples:
  virtiofsd-shim check vm1
  virtiofsd-shim check --config-dir=/tmp/conf vm1
`

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", checkUsage, stderr)
	var inst instanceFlags
	inst.register(fs, false)
	generated := fs.String("generator-dir", "/run/systemd/generator", "`folder` where systemd keeps the generator's output, to compare with")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 1 && inst.instance == "":
		inst.instance = fs.Arg(0)
	case fs.NArg() == 0 && inst.instance != "":
	default:
		fs.Usage()
		return usageErrorf("check: give exactly one instance name")
	}
	cfg, err := inst.load(fs)
	if err != nil {
		return err
	}
	p, err := makePlan(ctx, cfg, launch.VersionCache{})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "instance\t%s\n", cfg.Instance)
	fmt.Fprintf(w, "config\t%s\n", cfg.Path)
	fmt.Fprintf(w, "shared dir\t%s\n", cfg.SharedDir)
	fmt.Fprintf(w, "socket\t%s (virtiofsd@%s.socket)\n", socketPath(cfg.Instance), cfg.Instance)
	fmt.Fprintf(w, "virtiofsd\t%s (%s)\n", p.binary, p.version)
	fmt.Fprintf(w, "timeouts\tready %v, stop %v\n", p.readyTimeout, p.stopTimeout)
	fmt.Fprintf(w, "command\t%s\n", shellquote.Join(append([]string{p.binary}, p.args...)...))
	if err := w.Flush(); err != nil {
		return err
	}
	scope := config.SystemScope()
	scope.Dir = inst.configDir
	files, err := generator.DropIns(scope, cfg)
	if err != nil {
		return err
	}
	var warnings []string
	if cfg.SocketMode != nil && *cfg.SocketMode&^0o660 != 0 {
		warnings = append(warnings, fmt.Sprintf("SOCKET_MODE=%04o lets more than the socket's owner and group connect "+
			"(whoever connects gets the share, as root): use 0660 or narrower (%s:%d)", *cfg.SocketMode, cfg.Path, cfg.Line("SOCKET_MODE")))
	}
	if n := cfg.SocketUser; n != "" && !isNumber(n) {
		if _, err := user.Lookup(n); err != nil {
			warnings = append(warnings, fmt.Sprintf("SOCKET_USER=%s: no such user in /etc/passwd (%v): the socket will not start unless another name service knows it", n, err))
		}
	}
	if n := cfg.SocketGroup; n != "" && !isNumber(n) {
		if _, err := user.LookupGroup(n); err != nil {
			warnings = append(warnings, fmt.Sprintf("SOCKET_GROUP=%s: no such group in /etc/group (%v): the socket will not start unless another name service knows it", n, err))
		}
	}
	fmt.Fprintln(stdout, "\nThe generator (systemctl daemon-reload) makes of it:")
	for _, f := range files {
		path := filepath.Join(*generated, f.Path)
		fmt.Fprintf(stdout, "### %s\n%s", path, f.Content)
		loaded, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			warnings = append(warnings, fmt.Sprintf("%s does not exist: systemd has not applied this config yet; run systemctl daemon-reload "+
				"(and check that %s is installed)", path, generatorPath))
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("cannot compare with %s: %v", path, err))
		case !bytes.Equal(loaded, f.Content):
			warnings = append(warnings, fmt.Sprintf("%s differs: the config changed since the last daemon-reload; run systemctl daemon-reload", path))
		}
	}
	if stale := filepath.Join(*generated, "virtiofsd@"+cfg.Instance+".socket.d", generator.DropInName); len(files) < 2 {
		if _, err := os.Stat(stale); err == nil {
			warnings = append(warnings, fmt.Sprintf("%s still has socket settings the config no longer has: run systemctl daemon-reload", stale))
		}
	}
	if marker, err := restartMarker(false, cfg.Instance); err == nil {
		if _, err := os.Stat(marker); err == nil {
			warnings = append(warnings, fmt.Sprintf("virtiofsd@%s.socket was restarted while a VM was served: it listens again once that VM disconnects (%s)",
				cfg.Instance, marker))
		}
	}
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning: "+w)
	}
	fmt.Fprintln(stdout, "OK: the socket is passed as fd 3 by systemd (virtiofsd@"+cfg.Instance+".socket)")
	return nil
}

func isNumber(s string) bool { return strings.Trim(s, "0123456789") == "" }

// generatorPath is the generator as installed.
const generatorPath = "/usr/lib/systemd/system-generators/" + GeneratorName
