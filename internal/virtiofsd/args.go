package virtiofsd

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// SocketFD is the descriptor number virtiofsd gets the vhost-user socket on:
// the first of exec.Cmd.ExtraFiles.
const SocketFD = 3

// ErrOptions is wrapped by every error about what the instance asks virtiofsd
// to do: a value one flavor does not support, or an extra argument that would
// break the contract with systemd.
var ErrOptions = errors.New("virtiofsd options")

// OptionsError is an option virtiofsd cannot be given, and the instance
// config key that asked for it, so callers can point at the file's line.
type OptionsError struct {
	Key string // SHARED_DIR, CACHE, SANDBOX, READONLY, LOG_LEVEL or EXTRA_ARGS
	Msg string
}

func (e *OptionsError) Error() string        { return e.Msg }
func (e *OptionsError) Is(target error) bool { return target == ErrOptions }

// ExitCode is the shim's exit status for options virtiofsd cannot take.
func (e *OptionsError) ExitCode() int { return exitcode.Config }

func optionsErrorf(key, format string, a ...any) error {
	return &OptionsError{Key: key, Msg: fmt.Sprintf(format, a...)}
}

// Options is what the instance wants from virtiofsd, flavor-neutral.
type Options struct {
	SharedDir         string
	Cache             string // auto (default), always, never (C: none), metadata (Rust only)
	Sandbox           string // namespace, chroot, none (Rust only); "" leaves virtiofsd's default
	ThreadPoolSize    int    // 0 leaves virtiofsd's default
	Xattr             bool
	AnnounceSubmounts bool
	Readonly          bool   // Rust only
	LogLevel          string // info (default), debug; Rust also trace
	Extra             []string
	// Unprivileged is set when virtiofsd runs as a user other than root (a
	// user manager's instance): Rust only, namespace sandbox (chosen when
	// Sandbox is ""), never chroot.
	Unprivileged bool
	// UIDMap and GIDMap are virtiofsd's --uid-map/--gid-map values
	// (":inside:outside:count:"), rootless only; "" leaves virtiofsd's own
	// map of the user's id alone.
	UIDMap, GIDMap string

	// InodeFileHandles is never (""), prefer or mandatory. It is always
	// passed to the Rust one, so that a virtiofsd whose default changed
	// (1.13.3: never -> prefer, which keeps CAP_DAC_READ_SEARCH) cannot fail
	// to start under a unit whose bounding set lacks that capability.
	InodeFileHandles string
	// Live migration (Rust 1.11 and later): "" leaves virtiofsd's default.
	MigrationMode          string // find-paths, file-handles
	MigrationOnError       string // abort, guest-error
	MigrationVerifyHandles bool
	MigrationConfirmPaths  bool
	// PosixACL and SecurityLabel are "" (virtiofsd's default, never),
	// never, auto (Rust 1.14) or always.
	PosixACL, SecurityLabel    string
	TranslateUID, TranslateGID []string // --translate-uid/--translate-gid values (Rust 1.13)
	AllowMmap                  bool     // Rust only
	Writeback                  bool
	NoReaddirplus              bool
	PreserveNoatime            bool // Rust only
	// Version is what the binary reported (see DetectVersion): values it
	// cannot honour are refused, and it picks the form of --posix-acl and
	// --security-label. Its zero value skips those checks.
	Version Version
}

// ErrNeedsRust is wrapped by the error of a rootless instance given the C
// virtiofsd, which cannot run without root.
var ErrNeedsRust = errors.New("rootless virtiofsd needs the Rust flavor")

// needsRustError is a rootless instance given the C virtiofsd: a binary
// problem (exit status 69, unavailable), since the fix is to install the
// Rust one, not to edit the config.
type needsRustError struct{}

func (e *needsRustError) Error() string {
	return ErrNeedsRust.Error() + ": the C virtiofsd (QEMU <= 7.2) cannot run without root: " + InstallRust
}
func (e *needsRustError) Is(target error) bool { return target == ErrBinary || target == ErrNeedsRust }

// ExitCode is the shim's exit status when no usable binary is installed.
func (e *needsRustError) ExitCode() int { return exitcode.Unavailable }

// InstallRust says where the Rust virtiofsd comes from.
const InstallRust = "install the Rust virtiofsd (Debian 13, Ubuntu 24.04: apt install virtiofsd; Fedora: dnf install virtiofsd), " +
	"which installs /usr/libexec/virtiofsd, and remove any VIRTIOFSD= or FLAVOR=c that names the C one"

// Args builds virtiofsd's argv (without argv[0]) for flavor f: the socket is
// always fd 3, output always goes to stderr in the foreground, at a level
// that shows the readiness line.
func Args(f Flavor, o Options) ([]string, error) {
	if f != C && f != Rust {
		return nil, optionsErrorf("FLAVOR", "virtiofsd flavor not known: detect it first or set FLAVOR=c|rust")
	}
	if o.SharedDir == "" {
		return nil, optionsErrorf("SHARED_DIR", "no shared directory: set SHARED_DIR= in the instance config or pass --shared-dir")
	}
	if !filepath.IsAbs(o.SharedDir) {
		return nil, optionsErrorf("SHARED_DIR", "shared directory %q is relative: give an absolute path", o.SharedDir)
	}
	extraLevel, err := checkExtra(f, o.Extra)
	if err != nil {
		return nil, err
	}
	level := o.LogLevel
	if level == "" {
		level = "info"
	}
	if extraLevel != "" {
		level = "" // the extra arguments carry their own, allowed, level
	} else if err := checkLevel(f, level); err != nil {
		return nil, err
	}
	cache := o.Cache
	if cache == "" {
		cache = "auto"
	}
	if err := checkUnprivileged(f, &o); err != nil {
		return nil, err
	}
	if f == Rust {
		if err := checkRequirements(o); err != nil {
			return nil, err
		}
	}
	if f == C {
		return argsC(o, cache, level)
	}
	return argsRust(o, cache, level)
}

func argsC(o Options, cache, level string) ([]string, error) {
	switch cache {
	case "auto", "always":
	case "never", "none":
		cache = "none"
	default:
		return nil, optionsErrorf("CACHE", "CACHE=%s is not supported by the C virtiofsd (it knows auto, always, never)", cache)
	}
	a := []string{"-f", "--fd=" + strconv.Itoa(SocketFD), "-o", "source=" + o.SharedDir, "-o", "cache=" + cache}
	switch o.Sandbox {
	case "":
	case "namespace", "chroot":
		a = append(a, "-o", "sandbox="+o.Sandbox)
	default:
		return nil, optionsErrorf("SANDBOX", "SANDBOX=%s is not supported by the C virtiofsd (it knows namespace, chroot)", o.Sandbox)
	}
	if level != "" {
		a = append(a, "-o", "log_level="+level)
	}
	if o.ThreadPoolSize > 0 {
		a = append(a, "--thread-pool-size="+strconv.Itoa(o.ThreadPoolSize))
	}
	if o.Xattr {
		a = append(a, "-o", "xattr")
	}
	if o.AnnounceSubmounts {
		a = append(a, "-o", "announce_submounts")
	}
	if o.Readonly {
		return nil, optionsErrorf("READONLY", "READONLY=yes is not supported by the C virtiofsd: use the Rust virtiofsd, or a read-only bind mount of the shared directory")
	}
	if err := rustOnly(o); err != nil {
		return nil, err
	}
	for _, n := range []struct{ key, value, opt string }{{"POSIX_ACL", o.PosixACL, "posix_acl"}, {"SECURITY_LABEL", o.SecurityLabel, "security_label"}} {
		switch n.value {
		case "always":
			a = append(a, "-o", n.opt)
		case "auto":
			return nil, optionsErrorf(n.key, "%s=auto is not supported by the C virtiofsd (it knows yes and no; auto needs the Rust virtiofsd 1.14): "+
				"set %s=yes or no, or %s", n.key, n.key, InstallRust)
		}
	}
	if o.Writeback {
		a = append(a, "-o", "writeback")
	}
	if o.NoReaddirplus {
		a = append(a, "-o", "no_readdirplus")
	}
	return append(a, o.Extra...), nil
}

// rustOnly refuses, for the C virtiofsd, the options only the Rust one has.
func rustOnly(o Options) error {
	for _, k := range []struct {
		key string
		set bool
		why string
	}{
		{"MIGRATION_MODE", o.MigrationMode != "", "has no live migration"},
		{"MIGRATION_ON_ERROR", o.MigrationOnError != "", "has no live migration"},
		{"MIGRATION_VERIFY_HANDLES", o.MigrationVerifyHandles, "has no live migration"},
		{"MIGRATION_CONFIRM_PATHS", o.MigrationConfirmPaths, "has no live migration"},
		{"INODE_FILE_HANDLES", o.InodeFileHandles != "" && o.InodeFileHandles != "never", "has no file handles for inodes"},
		{"TRANSLATE_UID", o.TranslateUID != nil, "cannot translate ids"},
		{"TRANSLATE_GID", o.TranslateGID != nil, "cannot translate ids"},
		{"ALLOW_MMAP", o.AllowMmap, "has no --allow-mmap"},
		{"PRESERVE_NOATIME", o.PreserveNoatime, "has no --preserve-noatime"},
	} {
		if k.set {
			return optionsErrorf(k.key, "%s= needs the Rust virtiofsd: the C one (QEMU <= 7.2) %s; %s", k.key, k.why, InstallRust)
		}
	}
	return nil
}

func argsRust(o Options, cache, level string) ([]string, error) {
	switch cache {
	case "auto", "always", "never", "metadata":
	case "none":
		cache = "never"
	default:
		return nil, optionsErrorf("CACHE", "CACHE=%s is not supported by the Rust virtiofsd (it knows auto, always, never, metadata)", cache)
	}
	a := []string{"--fd=" + strconv.Itoa(SocketFD), "--shared-dir=" + o.SharedDir, "--cache=" + cache}
	switch o.Sandbox {
	case "":
	case "namespace", "chroot", "none":
		a = append(a, "--sandbox="+o.Sandbox)
	default:
		return nil, optionsErrorf("SANDBOX", "SANDBOX=%s is not supported by the Rust virtiofsd (it knows namespace, chroot, none)", o.Sandbox)
	}
	if level != "" {
		a = append(a, "--log-level="+level)
	}
	if o.ThreadPoolSize > 0 {
		a = append(a, "--thread-pool-size="+strconv.Itoa(o.ThreadPoolSize))
	}
	if o.Xattr {
		a = append(a, "--xattr")
	}
	if o.AnnounceSubmounts {
		a = append(a, "--announce-submounts")
	}
	if o.Readonly {
		a = append(a, "--readonly")
	}
	if o.UIDMap != "" {
		a = append(a, "--uid-map="+o.UIDMap)
	}
	if o.GIDMap != "" {
		a = append(a, "--gid-map="+o.GIDMap)
	}
	ifh := o.InodeFileHandles
	if ifh == "" {
		ifh = "never"
	}
	a = append(a, "--inode-file-handles="+ifh)
	if o.MigrationMode != "" {
		a = append(a, "--migration-mode="+o.MigrationMode)
	}
	if o.MigrationOnError != "" {
		a = append(a, "--migration-on-error="+o.MigrationOnError)
	}
	if o.MigrationVerifyHandles {
		a = append(a, "--migration-verify-handles")
	}
	if o.MigrationConfirmPaths {
		a = append(a, "--migration-confirm-paths")
	}
	negotiates := map[string]bool{"--posix-acl": o.Version.Has(FeaturePosixACLNegotiation),
		"--security-label": o.Version.Has(FeatureSecLabelNegotiation)}
	for _, n := range []struct{ key, value, opt string }{{"POSIX_ACL", o.PosixACL, "--posix-acl"}, {"SECURITY_LABEL", o.SecurityLabel, "--security-label"}} {
		switch {
		case n.value == "":
		case negotiates[n.opt]:
			a = append(a, n.opt+"="+n.value) // 1.14: never|auto|always
		case n.value == "always":
			a = append(a, n.opt) // before 1.14, a flag
		case n.value == "auto":
			// A binary of unknown version (checkRequirements refused a
			// known one): the flag form is the one every version takes.
			return nil, optionsErrorf(n.key, "%s=auto needs the Rust virtiofsd 1.14 or later, and %s's version is not known: "+
				"set %s=yes or no, or let the shim detect the version (FLAVOR=auto)", n.key, "this virtiofsd", n.key)
		}
	}
	for _, m := range o.TranslateUID {
		a = append(a, "--translate-uid="+m)
	}
	for _, m := range o.TranslateGID {
		a = append(a, "--translate-gid="+m)
	}
	if o.AllowMmap {
		a = append(a, "--allow-mmap")
	}
	if o.Writeback {
		a = append(a, "--writeback")
	}
	if o.NoReaddirplus {
		a = append(a, "--no-readdirplus")
	}
	if o.PreserveNoatime {
		a = append(a, "--preserve-noatime")
	}
	extra, err := withModcaps(o)
	if err != nil {
		return nil, err
	}
	return append(a, extra...), nil
}

// withModcaps returns the extra arguments with the capabilities the
// instance needs added to their --modcaps, or a --modcaps of its own:
// virtiofsd takes the last --modcaps only, so there must be one.
// MIGRATION_MODE=file-handles needs CAP_DAC_READ_SEARCH on the destination
// (virtiofsd's --help: "use --modcaps=+dac_read_search"); the generator
// puts it in the unit's bounding set.
func withModcaps(o Options) ([]string, error) {
	if o.MigrationMode != "file-handles" || o.Unprivileged {
		return o.Extra, nil
	}
	const want = "+dac_read_search"
	extra := slices.Clone(o.Extra)
	for i := 0; i < len(extra); i++ {
		name, value, hasValue := strings.Cut(extra[i], "=")
		switch {
		case name == "--modcaps":
			if !hasValue && i+1 < len(extra) {
				value = extra[i+1]
				extra = slices.Delete(extra, i+1, i+2)
			}
			for _, c := range strings.Split(value, ":") {
				if strings.EqualFold(c, "-dac_read_search") {
					return nil, optionsErrorf("EXTRA_ARGS", "extra virtiofsd argument %q refused: MIGRATION_MODE=file-handles needs CAP_DAC_READ_SEARCH "+
						"(virtiofsd would exit: can't disable DAC_READ_SEARCH)", extra[i])
				}
			}
			extra[i] = "--modcaps=" + want + ":" + value
			return extra, nil
		case extra[i] == "-o" && i+1 < len(extra) && strings.Contains(extra[i+1], "modcaps="):
			return nil, optionsErrorf("EXTRA_ARGS", "extra virtiofsd argument \"-o %s\" refused: with MIGRATION_MODE=file-handles the shim adds "+
				"%s to virtiofsd's --modcaps, and virtiofsd takes one only: write it as --modcaps=...", extra[i+1], want)
		}
	}
	return append(extra, "--modcaps="+want), nil
}

// checkUnprivileged refuses what cannot work for who runs virtiofsd, and
// picks the namespace sandbox for a rootless one.
func checkUnprivileged(f Flavor, o *Options) error {
	if !o.Unprivileged {
		for _, km := range [][2]string{{"UID_MAP", o.UIDMap}, {"GID_MAP", o.GIDMap}} {
			if key := km[0]; km[1] != "" {
				return optionsErrorf(key, "%s= is for rootless instances (systemctl --user): as root virtiofsd serves every id as it is; remove the line", key)
			}
		}
		return nil
	}
	if f == C {
		return &needsRustError{}
	}
	if o.InodeFileHandles == "prefer" || o.InodeFileHandles == "mandatory" || o.MigrationMode == "file-handles" {
		key, what := "INODE_FILE_HANDLES", "INODE_FILE_HANDLES="+o.InodeFileHandles
		if o.MigrationMode == "file-handles" {
			key, what = "MIGRATION_MODE", "MIGRATION_MODE=file-handles"
		}
		return optionsErrorf(key, "%s needs CAP_DAC_READ_SEARCH in the host's user namespace (open_by_handle_at), "+
			"which a rootless virtiofsd never has: use a system instance, or remove the line", what)
	}
	switch o.Sandbox {
	case "":
		o.Sandbox = "namespace"
	case "chroot":
		return optionsErrorf("SANDBOX", "SANDBOX=chroot needs root: a rootless virtiofsd sandboxes itself in a user namespace: "+
			"use SANDBOX=namespace (the default) or none")
	case "none":
		if o.UIDMap != "" || o.GIDMap != "" {
			key := "UID_MAP"
			if o.UIDMap == "" {
				key = "GID_MAP"
			}
			return optionsErrorf(key, "%s= maps ids in virtiofsd's user namespace, which SANDBOX=none does not make: use SANDBOX=namespace or drop the map", key)
		}
	}
	return nil
}

// readyLevels are the log levels at which virtiofsd still prints its
// readiness line.
var readyLevels = map[Flavor][]string{C: {"info", "debug"}, Rust: {"info", "debug", "trace"}}

func checkLevel(f Flavor, level string) error {
	for _, l := range readyLevels[f] {
		if level == l {
			return nil
		}
	}
	return optionsErrorf("LOG_LEVEL", "log level %q would hide virtiofsd's readiness line, so systemd would never see it start: use one of %s",
		level, strings.Join(readyLevels[f], ", "))
}

// keyed are virtiofsd options that the instance config sets through a key:
// giving them again as extra arguments would make two sources of truth.
var keyed = map[string]string{
	"--cache": "CACHE", "cache": "CACHE",
	"--sandbox": "SANDBOX", "sandbox": "SANDBOX",
	"--thread-pool-size": "THREAD_POOL_SIZE",
	"--xattr":            "XATTR", "xattr": "XATTR", "no_xattr": "XATTR",
	"--announce-submounts": "ANNOUNCE_SUBMOUNTS", "announce_submounts": "ANNOUNCE_SUBMOUNTS",
	"--readonly":           "READONLY",
	"--inode-file-handles": "INODE_FILE_HANDLES",
	"--migration-mode":     "MIGRATION_MODE", "--migration-on-error": "MIGRATION_ON_ERROR",
	"--migration-verify-handles": "MIGRATION_VERIFY_HANDLES", "--migration-confirm-paths": "MIGRATION_CONFIRM_PATHS",
	"--posix-acl": "POSIX_ACL", "posix_acl": "POSIX_ACL", "no_posix_acl": "POSIX_ACL",
	"--security-label": "SECURITY_LABEL", "security_label": "SECURITY_LABEL", "no_security_label": "SECURITY_LABEL",
	"--translate-uid": "TRANSLATE_UID", "--translate-gid": "TRANSLATE_GID",
	"--allow-mmap": "ALLOW_MMAP",
	"--writeback":  "WRITEBACK", "writeback": "WRITEBACK", "no_writeback": "WRITEBACK",
	"--no-readdirplus": "READDIRPLUS", "readdirplus": "READDIRPLUS", "no_readdirplus": "READDIRPLUS",
	"--preserve-noatime": "PRESERVE_NOATIME",
}

// cLongOptions are the only --options the C virtiofsd knows (7.2 --help);
// everything else is an -o option there.
var cLongOptions = map[string]bool{"--help": true, "--version": true, "--print-capabilities": true,
	"--syslog": true, "--daemonize": true, "--rlimit-nofile": true, "--socket-path": true,
	"--socket-group": true, "--fd": true, "--thread-pool-size": true}

// checkExtra refuses extra arguments that would break the contract with
// systemd and the shim, and returns the log level they set, if any.
func checkExtra(f Flavor, extra []string) (level string, err error) {
	refuse := func(arg, why string) error {
		return optionsErrorf("EXTRA_ARGS", "extra virtiofsd argument %q refused: %s", arg, why)
	}
	for i := 0; i < len(extra); i++ {
		arg := extra[i]
		name, value, hasValue := strings.Cut(arg, "=")
		next := func() (string, bool) {
			if hasValue {
				return value, true
			}
			if i+1 < len(extra) {
				i++
				return extra[i], true
			}
			return "", false
		}
		switch {
		case name == "--fd":
			return "", refuse(arg, "the shim passes the systemd socket as --fd=3 itself")
		case name == "--socket-path" || name == "--socket" || name == "--socket-group":
			return "", refuse(arg, "the socket belongs to the .socket unit (ListenStream=, SocketGroup=); set it there")
		case name == "--syslog":
			return "", refuse(arg, "virtiofsd must write to stderr so the shim can see it start and forward its lines to the journal")
		case name == "--daemonize":
			return "", refuse(arg, "virtiofsd must stay in the foreground as the shim's child")
		case name == "-d" || name == "--debug":
			return "", refuse(arg, "use LOG_LEVEL=debug instead")
		case name == "--shared-dir":
			return "", refuse(arg, "the shared directory is SHARED_DIR= (one per instance)")
		case name == "--print-capabilities" || name == "--version" || name == "-V" || name == "--help" || name == "-h":
			return "", refuse(arg, "it makes virtiofsd exit without serving")
		case name == "--log-level":
			v, ok := next()
			if !ok {
				return "", refuse(arg, "it needs a value")
			}
			if f == C {
				return "", refuse(arg, "the C virtiofsd takes -o log_level=LEVEL; better, set LOG_LEVEL=")
			}
			if err := checkLevel(f, v); err != nil {
				return "", err
			}
			level = v
		case keyed[name] != "":
			return "", refuse(arg, "set "+keyed[name]+"= in the instance config instead")
		case f == C && strings.HasPrefix(name, "--") && !cLongOptions[name]:
			hint := strings.ReplaceAll(strings.TrimPrefix(name, "--"), "-", "_")
			if hasValue {
				hint += "=" + value
			}
			return "", refuse(arg, "the C virtiofsd does not know "+name+": its options are -o NAME[=VALUE] (here: -o "+hint+")")
		case arg == "-o" || strings.HasPrefix(arg, "-o"):
			opts := strings.TrimPrefix(arg, "-o")
			if opts == "" {
				if i+1 >= len(extra) {
					return "", refuse(arg, "-o needs a value")
				}
				i++
				opts = extra[i]
			}
			for _, o := range strings.Split(opts, ",") {
				oname, ovalue, _ := strings.Cut(o, "=")
				switch {
				case oname == "fd" || oname == "vhost_user_socket" || oname == "socket_path" || oname == "socket_group":
					return "", refuse("-o "+o, "the shim passes the systemd socket as --fd=3 itself; the socket belongs to the .socket unit")
				case oname == "source":
					return "", refuse("-o "+o, "the shared directory is SHARED_DIR= (one per instance)")
				case oname == "debug":
					return "", refuse("-o "+o, "use LOG_LEVEL=debug instead")
				case oname == "log_level" || oname == "loglevel":
					if f == Rust {
						return "", refuse("-o "+o, "the Rust virtiofsd takes --log-level=LEVEL "+
							"(its -o parser refuses log_level and deprecates loglevel); better, set LOG_LEVEL=")
					}
					if oname == "loglevel" {
						return "", refuse("-o "+o, "the C virtiofsd knows -o log_level=LEVEL, not loglevel; better, set LOG_LEVEL=")
					}
					if err := checkLevel(f, ovalue); err != nil {
						return "", err
					}
					level = ovalue
				case keyed[oname] != "":
					return "", refuse("-o "+o, "set "+keyed[oname]+"= in the instance config instead")
				}
			}
		}
	}
	return level, nil
}
