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
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/hooks"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
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

With --user, NAME is an instance of your own user manager: the config is
~/.config/virtiofsd/NAME.conf ($XDG_CONFIG_HOME), which must be yours and
not writable by others, and virtiofsd must be the Rust one (it runs without
root there).

With --libvirt, prints instead, once the instance is valid, the libvirt XML
that uses its socket: the <filesystem> element to paste into <devices>
(virsh edit DOMAIN) and the <memoryBacking> vhost-user needs.

Examples:
  virtiofsd-shim check vm1
  virtiofsd-shim check --config-dir=/tmp/conf vm1
  virtiofsd-shim check --user vm1          # ~/.config/virtiofsd/vm1.conf
  virtiofsd-shim check --libvirt vm1
  virtiofsd-shim check --libvirt --tag=data vm1
`

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", checkUsage, stderr)
	var inst instanceFlags
	inst.register(fs, false)
	generated := fs.String("generator-dir", "", "`folder` where systemd keeps the generator's output, to compare with "+
		"(default /run/systemd/generator, with --user $XDG_RUNTIME_DIR/systemd/generator)")
	libvirt := fs.Bool("libvirt", false, "print the libvirt <filesystem> and <memoryBacking> XML for the instance")
	tag := fs.String("tag", "", "virtiofs mount `tag` of the --libvirt XML (default: the instance name)")
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
	p, err := plan.Make(ctx, cfg, inst.scope(), virtiofsd.VersionCache{})
	if err != nil {
		return err
	}
	if *libvirt {
		if *tag == "" {
			*tag = cfg.Instance
		}
		x, err := domainxml.Snippet(cfg.Instance, plan.SocketPath(inst.scope(), cfg.Instance), *tag)
		if err != nil {
			return usageErrorf("check: %v", err)
		}
		_, err = io.WriteString(stdout, x)
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "instance\t%s\n", cfg.Instance)
	fmt.Fprintf(w, "config\t%s\n", cfg.Path)
	fmt.Fprintf(w, "shared dir\t%s\n", cfg.SharedDir)
	unit := "virtiofsd@" + cfg.Instance + ".socket"
	if inst.user {
		unit += ", systemctl --user"
	}
	fmt.Fprintf(w, "socket\t%s (%s)\n", plan.SocketPath(inst.scope(), cfg.Instance), unit)
	fmt.Fprintf(w, "virtiofsd\t%s (%s)\n", p.Binary, p.Version)
	if p.Rootless {
		fmt.Fprintf(w, "rootless\tuid %d, gid %d; UID_MAP %s, GID_MAP %s\n", p.UID, p.GID, plan.IDMapOrDefault(cfg.UIDMap), plan.IDMapOrDefault(cfg.GIDMap))
	}
	fmt.Fprintf(w, "timeouts\tready %v, stop %v\n", p.ReadyTimeout, p.StopTimeout)
	fmt.Fprintf(w, "command\t%s\n", shellquote.Join(append([]string{p.Binary}, p.Args...)...))
	if err := w.Flush(); err != nil {
		return err
	}
	scope := inst.scope()
	files, err := generator.DropIns(scope, cfg)
	if err != nil {
		return err
	}
	if *generated == "" {
		rt, err := scope.RuntimeDir(os.Getenv)
		if err != nil {
			return err
		}
		*generated = filepath.Join(rt, "systemd", "generator")
	}
	systemctl := "systemctl" + userFlag(scope)
	var warnings []string
	if cfg.SocketMode != nil && *cfg.SocketMode&^0o660 != 0 {
		warnings = append(warnings, fmt.Sprintf("SOCKET_MODE=%04o lets more than the socket's owner and group connect "+
			"(whoever connects gets the share, as root): use 0660 or narrower (%s:%d)", *cfg.SocketMode, cfg.Path, cfg.Line("SOCKET_MODE")))
	}
	switch {
	case scope == config.User && (cfg.SocketUser != "" || cfg.SocketGroup != ""):
		warnings = append(warnings, fmt.Sprintf("SOCKET_USER and SOCKET_GROUP are ignored for a user instance: its socket is yours, "+
			"created by your user manager; remove them from %s (SOCKET_MODE applies)", cfg.Path))
	case cfg.SocketUser != "" && !isNumber(cfg.SocketUser):
		n := cfg.SocketUser
		if _, err := user.Lookup(n); err != nil {
			warnings = append(warnings, fmt.Sprintf("SOCKET_USER=%s: no such user in /etc/passwd (%v): the socket will not start unless another name service knows it", n, err))
		}
	}
	if n := cfg.SocketGroup; scope == config.System && n != "" && !isNumber(n) {
		if _, err := user.LookupGroup(n); err != nil {
			warnings = append(warnings, fmt.Sprintf("SOCKET_GROUP=%s: no such group in /etc/group (%v): the socket will not start unless another name service knows it", n, err))
		}
	}
	fmt.Fprintf(stdout, "\nThe generator (%s daemon-reload) makes of it:\n", systemctl)
	for _, f := range files {
		path := filepath.Join(*generated, f.Path)
		fmt.Fprintf(stdout, "### %s\n%s", path, f.Content)
		loaded, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			warnings = append(warnings, fmt.Sprintf("%s does not exist: systemd has not applied this config yet; run %s daemon-reload "+
				"(and check that %s is installed)", path, systemctl, generatorPath(scope)))
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("cannot compare with %s: %v", path, err))
		case !bytes.Equal(loaded, f.Content):
			warnings = append(warnings, fmt.Sprintf("%s differs: the config changed since the last daemon-reload; run %s daemon-reload", path, systemctl))
		}
	}
	if stale := filepath.Join(*generated, "virtiofsd@"+cfg.Instance+".socket.d", generator.DropInName); len(files) < 2 {
		if _, err := os.Stat(stale); err == nil {
			warnings = append(warnings, fmt.Sprintf("%s still has socket settings the config no longer has: run %s daemon-reload", stale, systemctl))
		}
	}
	if marker, err := hooks.RestartMarker(scope, cfg.Instance); err == nil {
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

// generatorPath is the scope's generator as installed.
func generatorPath(s config.Scope) string {
	return "/usr/lib/systemd/" + s.String() + "-generators/" + GeneratorName
}

// userFlag is " --user" for User, for the commands a message names.
func userFlag(s config.Scope) string {
	if f := s.Flag(); f != "" {
		return " " + f
	}
	return ""
}
