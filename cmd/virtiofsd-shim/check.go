package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kballard/go-shellquote"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
)

const checkUsage = `Usage: virtiofsd-shim check [flags] NAME

Validates instance NAME offline, as virtiofsd@NAME.service would start it:
its config file, the shared directory, the virtiofsd binary and flavor, and
the arguments. Prints the exact command line run would start. Exits non-zero
with the cause on any problem (see the exit status table in --help).

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
	p, err := makePlan(ctx, cfg, inst.scope(), launch.VersionCache{})
	if err != nil {
		return err
	}
	if *libvirt {
		if *tag == "" {
			*tag = cfg.Instance
		}
		x, err := domainxml.Snippet(cfg.Instance, socketPath(inst.scope(), cfg.Instance), *tag)
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
	fmt.Fprintf(w, "socket\t%s (%s)\n", socketPath(inst.scope(), cfg.Instance), unit)
	fmt.Fprintf(w, "virtiofsd\t%s (%s)\n", p.binary, p.version)
	if p.rootless {
		fmt.Fprintf(w, "rootless\tuid %d, gid %d; UID_MAP %s, GID_MAP %s\n", p.uid, p.gid, idMapOrDefault(cfg.UIDMap), idMapOrDefault(cfg.GIDMap))
	}
	fmt.Fprintf(w, "timeouts\tready %v, stop %v\n", p.readyTimeout, p.stopTimeout)
	fmt.Fprintf(w, "command\t%s\n", shellquote.Join(append([]string{p.binary}, p.args...)...))
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "OK: the socket is passed as fd 3 by systemd (virtiofsd@"+cfg.Instance+".socket)")
	return nil
}
