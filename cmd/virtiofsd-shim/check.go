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
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kballard/go-shellquote"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
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
	if f := p.Version.Features; f != nil {
		fmt.Fprintf(w, "capabilities\t%s\n", orNone(strings.Join(f, ", ")))
	}
	if p.Version.Flavor == virtiofsd.Rust {
		fmt.Fprintf(w, "migration\t%s\n", migrationSummary(cfg))
		fmt.Fprintf(w, "file handles\t%s\n", fileHandlesSummary(cfg))
	}
	if keys := optionKeys(cfg); keys != "" {
		fmt.Fprintf(w, "options\t%s\n", keys)
	}
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
				"(and check that %s is installed)", path, systemctl, generator.Path(scope)))
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
	st, stWarnings := instanceState(scope, cfg.Instance, systemctl)
	warnings = append(warnings, stWarnings...)
	if st != "" {
		fmt.Fprintf(stdout, "\nstate\t%s\n", st)
	}
	if scope == config.System {
		warnings = append(warnings, modcapsWarnings(cfg, p.Args)...)
	}
	if w := threadPoolWarning(cfg, p.Version); w != "" {
		warnings = append(warnings, w)
	}
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning: "+w)
	}
	fmt.Fprintln(stdout, "OK: the socket is passed as fd 3 by systemd (virtiofsd@"+cfg.Instance+".socket)")
	return nil
}

func isNumber(s string) bool { return strings.Trim(s, "0123456789") == "" }


// userFlag is " --user" for User, for the commands a message names.
func userFlag(s config.Scope) string {
	if f := s.Flag(); f != "" {
		return " " + f
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// migrationSummary shows the migration keys, and virtiofsd's defaults for
// those unset.
func migrationSummary(c *config.Config) string {
	or := func(v, def string) string {
		if v == "" {
			return def + " (default)"
		}
		return v
	}
	yn := func(b *bool) string {
		if b != nil && *b {
			return "yes"
		}
		return "no"
	}
	s := fmt.Sprintf("mode %s, on error %s", or(c.MigrationMode, "find-paths"), or(c.MigrationOnError, "abort"))
	if c.MigrationMode != "file-handles" {
		s += fmt.Sprintf(", verify handles %s, confirm paths %s", yn(c.MigrationVerifyHandles), yn(c.MigrationConfirmPaths))
	}
	if c.MigrationMode == "file-handles" {
		s += "; CAP_DAC_READ_SEARCH granted by the generator, --modcaps=+dac_read_search"
	}
	return s + "; set the same keys on every host"
}

func fileHandlesSummary(c *config.Config) string {
	switch c.InodeFileHandles {
	case "":
		return "never (the shim's default, passed explicitly: virtiofsd 1.13.3 and later default to prefer, which needs CAP_DAC_READ_SEARCH)"
	case "never":
		return "never"
	}
	return c.InodeFileHandles + " (CAP_DAC_READ_SEARCH granted by the generator)"
}

// optionKeys lists the other keys of virtiofsd's options that are set.
func optionKeys(c *config.Config) string {
	var l []string
	b := func(key string, v *bool) {
		if v != nil {
			l = append(l, fmt.Sprintf("%s=%s", key, map[bool]string{true: "yes", false: "no"}[*v]))
		}
	}
	str := func(key, v string) {
		if v != "" {
			l = append(l, key+"="+v)
		}
	}
	str("POSIX_ACL", c.PosixACL)
	str("SECURITY_LABEL", c.SecurityLabel)
	str("TRANSLATE_UID", strings.Join(c.TranslateUID, " "))
	str("TRANSLATE_GID", strings.Join(c.TranslateGID, " "))
	b("ALLOW_MMAP", c.AllowMmap)
	b("WRITEBACK", c.Writeback)
	b("READDIRPLUS", c.Readdirplus)
	b("PRESERVE_NOATIME", c.PreserveNoatime)
	return strings.Join(l, ", ")
}

// modcapsWarnings warns of each capability virtiofsd is told to keep
// (--modcaps=+X) that the service's bounding set lacks: virtiofsd would fail
// before it is ready ("can't apply the child capabilities"), and a queued
// client would drive the socket into its start limit.
func modcapsWarnings(c *config.Config, args []string) []string {
	bound := generator.BoundingSet(c)
	var w []string
	for _, capName := range virtiofsd.AddedCapabilities(args) {
		if slices.Contains(bound, capName) {
			continue
		}
		w = append(w, fmt.Sprintf("EXTRA_ARGS asks virtiofsd to keep %s (--modcaps), which virtiofsd@%s.service's bounding set lacks "+
			"(%s:%d): virtiofsd will fail to start (\"can't apply the child capabilities\"); add it in a drop-in "+
			"(systemctl edit virtiofsd@%s.service: [Service] CapabilityBoundingSet=%s) or remove it",
			capName, c.Instance, c.Path, c.Line("EXTRA_ARGS"), c.Instance, capName))
	}
	return w
}

// threadPoolWarning warns of a thread pool for the C virtiofsd. Its pool is
// glib's, whose pool thread calls sched_getaffinity(2) when it spawns a
// worker (glib 2.74, Debian 12); the C virtiofsd's own seccomp allow-list
// lacks that call, so the kernel kills virtiofsd (SIGSYS) at the guest's
// first request, and its namespace parent exits with status 1 and no
// message (QEMU 7.2.22 here: the audit record names syscall 204). QEMU
// dropped the C virtiofsd after 7.2, so no fix is coming.
func threadPoolWarning(c *config.Config, v virtiofsd.Version) string {
	if v.Flavor != virtiofsd.C || c.ThreadPoolSize == nil || *c.ThreadPoolSize == 0 {
		return ""
	}
	return fmt.Sprintf("THREAD_POOL_SIZE=%d with the %s (%s:%d): its glib thread pool calls sched_getaffinity, which its own "+
		"seccomp filter does not allow; with glib 2.74 (Debian 12) the kernel kills it at the guest's first request, "+
		"and it exits with status 1 and no message (the kernel's audit log shows sig=31 syscall=204). "+
		"Remove THREAD_POOL_SIZE (no pool, the default) or install the Rust virtiofsd",
		*c.ThreadPoolSize, v, c.Path, c.Line("THREAD_POOL_SIZE"))
}

// instanceState reads the instance's typed state and its deferred-restart
// marker, offline: a line that says where the service is ("" when no state
// was ever written), and warnings about a deferred restart.
func instanceState(scope config.Scope, instance, systemctl string) (line string, warnings []string) {
	st, err := state.Load(scope, os.Getenv, instance)
	switch {
	case err != nil:
		warnings = append(warnings, fmt.Sprintf("cannot read the instance's state: %v", err))
	case st != nil:
		line = describeState(st)
	}
	rt, err := scope.RuntimeDir(os.Getenv)
	if err != nil {
		return line, warnings
	}
	marker := state.MarkerPath(rt, instance)
	d, err := state.ReadMarker(marker)
	socket := "virtiofsd@" + instance + ".socket"
	running := st != nil && !st.Phase.Over() && processExists(st.ShimPID)
	switch {
	case err != nil:
		warnings = append(warnings, err.Error())
	case d == nil:
	case d.ResumeError != "":
		warnings = append(warnings, fmt.Sprintf("deferred restart failed: %s was restarted while a VM was served, and starting it again "+
			"when the session ended failed: %s. It stays down: run rm %s; %s start %s", socket, d.ResumeError, marker, systemctl, socket))
	case running:
		warnings = append(warnings, fmt.Sprintf("deferred restart: %s was restarted while a VM was served: it listens again once that VM disconnects (%s; rm it to cancel)",
			socket, marker))
	default:
		warnings = append(warnings, fmt.Sprintf("deferred restart left behind: %s exists but no session runs, so the socket's start is skipped: "+
			"run rm %s; %s start %s", marker, marker, systemctl, socket))
	}
	return line, warnings
}

// describeState is the state line of check.
func describeState(st *state.State) string {
	var b strings.Builder
	b.WriteString(string(st.Phase))
	if st.VirtiofsdPID != 0 {
		fmt.Fprintf(&b, ", virtiofsd pid %d", st.VirtiofsdPID)
	}
	if st.Session != "" {
		fmt.Fprintf(&b, ", session %d (%s)", st.SessionNumber, st.Session)
	}
	if st.Standby {
		b.WriteString(", standby")
	}
	switch st.Release {
	case state.KeepsServing:
		b.WriteString(", socket released: serves its VM until it disconnects")
	case state.LetGo:
		b.WriteString(", socket released")
	}
	if f := st.Failure; f != nil {
		fmt.Fprintf(&b, ", failed with exit status %d: %s", f.ExitCode, f.Reason)
	}
	if !st.Phase.Over() && !processExists(st.ShimPID) {
		fmt.Fprintf(&b, " (written by shim pid %d, which no longer runs)", st.ShimPID)
	}
	fmt.Fprintf(&b, "; at %s", st.Updated.Format(time.RFC3339))
	return b.String()
}

// processExists tells whether pid names a process (signal 0).
func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
