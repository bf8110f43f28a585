package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/check"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

const checkUsage = `Usage: virtiofsd-shim check [flags] NAME

Validates instance NAME offline, as virtiofsd@NAME.service would start it:
its config file, the shared directory, the virtiofsd binary and flavor, and
the arguments. Each key is checked against what the installed virtiofsd
reports (--print-capabilities, --version): one it cannot honour is refused
with file:line, the version found and the version needed. Shows the
capabilities, the migration keys, the file handle mode and the options, and
warns when an EXTRA_ARGS --modcaps=+X names a capability the unit's bounding
set lacks (virtiofsd would fail to start). Prints the exact command line run would start, and the unit
drop-ins the generator makes of the config (socket owner, group and mode,
standby, RequiresMountsFor=), with a warning when they differ from what
systemd loaded at its last daemon-reload, or when SOCKET_MODE lets more than
the socket's owner and group connect. Exits non-zero with the cause on any
problem (see the exit status table in --help); warnings do not change it.

With --user, NAME is an instance of your own user manager: the config is
~/.config/virtiofsd/NAME.conf ($XDG_CONFIG_HOME), which must be yours and
not writable by others, and virtiofsd must be the Rust one (it runs without
root there).

With --json, prints the findings as one JSON object instead, and exits
the same way: {"instance", "scope", "ok" (no error), "findings": [...]},
each finding {"kind": "error"|"warning"|"fact", "code" (stable, for
scripts), "label" (a fact's name), "message", "file", "line", "fix",
"content" (a drop-in's text)}; empty fields are left out. See
virtiofsd-shim(8) for the codes.

With --libvirt, prints instead, once the instance is valid, the libvirt XML
that uses its socket: the <filesystem> element to paste into <devices>
(virsh edit DOMAIN) and the <memoryBacking> vhost-user needs.

Examples:
  virtiofsd-shim check vm1
  virtiofsd-shim check --config-dir=/tmp/conf vm1
  virtiofsd-shim check --user vm1          # ~/.config/virtiofsd/vm1.conf
  virtiofsd-shim check --json vm1 | jq -r '.findings[] | select(.kind == "warning") | .code'
  virtiofsd-shim check --libvirt vm1
  virtiofsd-shim check --libvirt --tag=data vm1
`

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", checkUsage, stderr)
	var inst instanceFlags
	inst.register(fs, false)
	generated := fs.String("generator-dir", "", "`folder` where systemd keeps the generator's output, to compare with "+
		"(default /run/systemd/generator, with --user $XDG_RUNTIME_DIR/systemd/generator)")
	asJSON := fs.Bool("json", false, "print the findings as JSON (see --help for the schema)")
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
	report, err := check.Run(ctx, check.Options{Scope: inst.scope(), Instance: inst.instance, ConfigDir: inst.configDir,
		GeneratorDir: *generated, Env: os.Getenv, Versions: virtiofsd.VersionCache{}})
	switch {
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(report); jerr != nil {
			return jerr
		}
		return err
	case err != nil:
		return err
	case *libvirt:
		if *tag == "" {
			*tag = report.Instance
		}
		x, err := domainxml.Snippet(report.Instance, plan.SocketPath(inst.scope(), report.Instance), *tag)
		if err != nil {
			return usageErrorf("check: %v", err)
		}
		_, err = io.WriteString(stdout, x)
		return err
	}
	return printCheck(stdout, report)
}

// printCheck prints a report as text: the facts as a table, the generator's
// drop-ins, the state, the warnings, and OK.
func printCheck(out io.Writer, r *check.Report) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	var dropIns, state, warnings, ready []check.Finding
	for _, f := range r.Findings {
		switch {
		case f.Code == check.CodeDropIn:
			dropIns = append(dropIns, f)
		case f.Code == check.CodeState:
			state = append(state, f)
		case f.Code == check.CodeReady:
			ready = append(ready, f)
		case f.Kind == check.Fact:
			fmt.Fprintf(w, "%s\t%s\n", f.Label, f.Message)
		default:
			warnings = append(warnings, f)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nThe generator (%s daemon-reload) makes of it:\n", r.Systemctl)
	for _, f := range dropIns {
		fmt.Fprintf(out, "### %s\n%s", f.File, f.Content)
	}
	for _, f := range state {
		fmt.Fprintf(out, "\n%s\t%s\n", f.Label, f.Message)
	}
	for _, f := range warnings {
		fmt.Fprintf(out, "%s: %s\n", f.Kind, f.Message)
	}
	for _, f := range ready {
		fmt.Fprintf(out, "OK: %s\n", f.Message)
	}
	return nil
}
