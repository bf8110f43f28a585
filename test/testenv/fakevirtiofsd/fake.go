// Package fakevirtiofsd lets a test binary impersonate virtiofsd, in either
// flavor's exact output, and misbehave on demand (the os/exec TestMain
// pattern). It exists for unit tests only, beside tests with the real one.
//
// A test's TestMain calls Main first; the test then runs os.Args[0] with
// Env(flavor, mode) added to the environment.
package fakevirtiofsd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Modes of misbehaviour.
const (
	Ready            = "ready"              // serve one client like the real one
	SlowStart        = "slow-start"         // print the startup lines, then never the readiness line; SIGTERM ends it as it ends the real one there
	NeverReady       = "never-ready"        // print a line, then hang without the readiness line, ignoring SIGTERM
	CrashBeforeReady = "crash-before-ready" // print an error and exit 1 before readiness
	CrashAfterReady  = "crash-after-ready"  // become ready, then die: C by SIGKILL, Rust as when its sandboxed child is killed (exit 247)
	IgnoreSIGTERM    = "ignore-sigterm"     // become ready and ignore SIGTERM
	LateAccept       = "late-accept"        // become ready; the first SIGTERM is lost as in the C one's race between its readiness line and accept()
	Flood            = "flood"              // become ready, write FAKE_VIRTIOFSD_LINES lines, then serve
	// MigrationLoadFails serves a client as a migration destination whose
	// incoming state cannot be loaded (--migration-on-error=abort, an open
	// deleted file on the source): the Rust one's error line, then the
	// client (QEMU) hangs up and virtiofsd exits 0 (docs/virtiofsd.md).
	MigrationLoadFails = "migration-load-fails"
	// MigrationSaveFails serves a client as a source whose state cannot be
	// saved.
	MigrationSaveFails = "migration-save-fails"
	// Hostile serves a client and, while serving, prints what the real
	// one prints when a guest looks up files named like every event line
	// of both flavors, with and without newlines in the name (see
	// HostileNames), then HostileDone.
	Hostile = "hostile-names"
)

// The lines of a failed migration: the Rust one's (1.13.2, src/vhost_user.rs,
// target virtiofsd::vhost_user) error line, at error level.
const (
	MigrationTarget      = "virtiofsd::vhost_user"
	MigrationLoadFailure = "Migration failed: Failed to load state: Inode 5: Migration source has lost inode 5"
	MigrationSaveFailure = "Migration failed: Failed to save state: Failed to serialize inode 5"
)

// HostileDone is the message the fake prints after the hostile lines.
const HostileDone = "fake virtiofsd: hostile names printed"

// HostileNames are file names a guest can create and look up that read
// like virtiofsd's event lines, in both flavors' formats, alone or after a
// newline, so that virtiofsd printing the name starts a physical line with
// it.
func HostileNames() []string {
	events := []string{
		"virtio_session_mount: Waiting for vhost-user socket connection...",
		"virtio_session_mount: Received vhost-user socket connection",
		"virtio_loop: Unexpected poll revents 11",
		"[2024-01-01 00:00:00.000000+0000] [ID: 00000001] virtio_session_mount: Waiting for vhost-user socket connection...",
		"[2024-01-01 00:00:00.000000+0000] [ID: 00000001] virtio_session_mount: Received vhost-user socket connection",
		"[2024-01-01 00:00:00.000000+0000] [ID: 00000001] virtio_loop: Unexpected poll revents 11",
		"[2024-01-01T00:00:00Z INFO  virtiofsd] Waiting for vhost-user socket connection...",
		"[2024-01-01T00:00:00Z INFO  virtiofsd] Client connected, servicing requests",
		"[2024-01-01T00:00:00Z INFO  virtiofsd] Client disconnected, shutting down",
		"Waiting for vhost-user socket connection...",
		"Client connected, servicing requests",
		"Client disconnected, shutting down",
	}
	var names []string
	for _, e := range events {
		names = append(names, e, "x\n"+e+"\ny", "x\n"+e)
	}
	return names
}

// Flavors, as launch names them.
const (
	C    = "c"
	Rust = "rust"
)

const (
	envGuard  = "FAKE_VIRTIOFSD"
	envFlavor = "FAKE_VIRTIOFSD_FLAVOR"
	envMode   = "FAKE_VIRTIOFSD_MODE"
	envLines  = "FAKE_VIRTIOFSD_LINES"
	envVer    = "FAKE_VIRTIOFSD_VERSION"
)

// DefaultRustVersion is the version the Rust fake reports unless
// VersionEnv says otherwise: Debian 13's.
const DefaultRustVersion = "1.13.2"

// VersionEnv makes the Rust fake report version v and behave as it: from
// 1.13.3, --inode-file-handles defaults to prefer (which keeps
// CAP_DAC_READ_SEARCH); from 1.14, --print-capabilities lists the
// posix-acl and security-label negotiation modes.
func VersionEnv(v string) string { return envVer + "=" + v }

// Env returns the environment entries that make the test binary a fake
// virtiofsd of flavor in mode.
func Env(flavor, mode string) []string {
	return []string{envGuard + "=1", envFlavor + "=" + flavor, envMode + "=" + mode}
}

// FloodEnv sets the number of lines Flood writes.
func FloodEnv(n int) string { return envLines + "=" + strconv.Itoa(n) }

// Main impersonates virtiofsd and exits when the environment asks for it;
// otherwise it returns at once.
func Main() {
	if os.Getenv(envGuard) == "" {
		return
	}
	os.Exit(run(os.Args[1:], os.Getenv(envFlavor), os.Getenv(envMode)))
}

type fake struct {
	flavor string
	out    io.Writer
}

// say prints one line in the flavor's format, in one write as virtiofsd does.
func (f *fake) say(level, msg string) { f.sayFrom("virtiofsd", level, msg) }

// sayFrom is say for a line of another Rust module (target), e.g.
// virtiofsd::limits.
func (f *fake) sayFrom(target, level, msg string) {
	var line string
	if f.flavor == Rust {
		line = fmt.Sprintf("[%s %-5s %s] %s\n", time.Now().UTC().Format("2006-01-02T15:04:05Z"), level, target, msg)
	} else {
		line = msg + "\n"
	}
	io.WriteString(f.out, line)
}

// hostile prints what the real one prints when the guest looks up each
// of HostileNames: the C one at debug level (each name as it is, in
// lo_lookup), the Rust one in its migration warnings (names as they are,
// in Display form; at debug level it prints no names).
func (f *fake) hostile() {
	for i, name := range HostileNames() {
		if f.flavor == Rust {
			f.sayFrom("virtiofsd::passthrough::device_state::preserialization::find_paths", "WARN",
				fmt.Sprintf("Failed to discover entry %s of 1: Permission denied (os error 13)", name))
			continue
		}
		stamp := time.Now().UTC().Format("2006-01-02 15:04:05.000000-0700")
		io.WriteString(f.out, fmt.Sprintf("[%s] [ID: %08d] lo_lookup(parent=1, name=%s)\n", stamp, 3+i%2, name))
	}
	f.say("INFO", HostileDone)
}

// raw prints text as it is (the Rust one's argument errors come from its
// option parser, without the log prefix).
func (f *fake) raw(text string) { io.WriteString(f.out, text) }

func run(args []string, flavor, mode string) int {
	f := &fake{flavor: flavor, out: os.Stderr}
	for _, a := range args {
		switch a {
		case "--print-capabilities":
			if flavor == Rust {
				features := `"migrate-precopy", "separate-options"`
				if atLeast(rustVersion(), "1.14") {
					features = `"migrate-precopy", "posix-acl-negotiation-mode", "security-label-negotiation-mode", "separate-options"`
				}
				fmt.Println(`{"type": "fs", "features": [` + features + `]}`)
			} else {
				fmt.Println(`{"type": "fs"}`)
			}
			return 0
		case "--version":
			if flavor == Rust {
				fmt.Println("virtiofsd " + rustVersion())
			} else {
				fmt.Println("virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
				fmt.Println("Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers")
			}
			return 0
		case "--syslog", "--daemonize":
			f.say("ERROR", "fake virtiofsd: refusing "+a+": the shim must never pass it")
			return 64
		}
	}
	opts, code := f.parse(args)
	if code >= 0 {
		return code
	}
	if problem := checkInheritance(args); problem != "" {
		f.say("ERROR", "fake virtiofsd: "+problem)
		return 65
	}

	// Both install their SIGTERM handlers early, before the readiness line;
	// until then SIGTERM kills them (SlowStart, C).
	terms := make(chan os.Signal, 1)
	switch {
	case mode == NeverReady || mode == IgnoreSIGTERM:
		// Ignored before the readiness line, not after it: a SIGTERM sent
		// the moment the line appears must find it ignored. Go's
		// signal.Ignore, racing a signal that is being delivered, can
		// still let the default action (death) through.
		signal.Ignore(syscall.SIGTERM)
		signal.Notify(terms, syscall.SIGINT, syscall.SIGHUP)
	case mode == SlowStart && flavor == C:
		signal.Notify(terms, syscall.SIGINT, syscall.SIGHUP)
	default:
		signal.Notify(terms, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	}

	if _, err := os.Stat(opts.sharedDir); err != nil && mode != CrashBeforeReady {
		if flavor == Rust {
			f.say("ERROR", opts.sharedDir+" does not exist")
		} else {
			f.say("INFO", fmt.Sprintf("failed to stat source (%q): No such file or directory", opts.sharedDir))
		}
		return 1
	}
	if flavor == Rust && opts.migrationMode == "file-handles" && (opts.confirmPaths || opts.verifyHandles) {
		if opts.confirmPaths {
			f.say("ERROR", "Cannot use --migration-confirm-paths with --migration-mode=file-handles (because it is unnecessary)")
		}
		if opts.verifyHandles {
			f.say("ERROR", "Cannot use --migration-verify-handles with --migration-mode=file-handles (because it is unnecessary)")
		}
		return 1
	}
	if flavor == Rust {
		f.raiseNofile(opts.rlimitNofile)
		if msg := opts.capabilityProblem(); msg != "" {
			f.say("ERROR", msg)
			return 1
		}
	}
	ln, err := net.FileListener(os.NewFile(3, "vhost-user socket"))
	if err != nil {
		f.say("ERROR", "fake virtiofsd: fd 3 is not a listener: "+err.Error())
		return 66
	}

	switch mode {
	case NeverReady:
		f.say("INFO", "fake virtiofsd: setting up, and never getting there")
		select {}
	case SlowStart:
		<-terms
		return 1 // Rust: _exit(1); C died of the SIGTERM already
	case CrashBeforeReady:
		if flavor == Rust {
			f.say("ERROR", "Error entering sandbox: DropSupplementalGroups(Os { code: 1, kind: PermissionDenied })")
		} else {
			f.say("INFO", "failed to stat source (\"/srv/missing\"): No such file or directory")
		}
		return 1
	}

	if flavor == Rust {
		f.say("INFO", "Waiting for vhost-user socket connection...")
	} else {
		f.say("INFO", "virtio_session_mount: Waiting for vhost-user socket connection...")
	}

	switch mode {
	case CrashAfterReady:
		time.Sleep(50 * time.Millisecond)
		if flavor == Rust {
			// Its sandboxed child died of SIGKILL: the parent says so and
			// exits with -SIGKILL.
			f.sayFrom("virtiofsd::util", "ERROR", "Child process terminated by signal 9")
			return 256 - int(syscall.SIGKILL)
		}
		f.say("ERROR", "fake virtiofsd: crashing now")
		signal.Reset()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case IgnoreSIGTERM:
		select {}
	case Flood:
		n, _ := strconv.Atoi(os.Getenv(envLines))
		for i := 0; i < n; i++ {
			f.say("DEBUG", "fake virtiofsd: flood line "+strconv.Itoa(i))
		}
	}

	conns := make(chan net.Conn)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
	}()
	if mode == LateAccept {
		<-terms // only sets the exit flag; accept() blocks on
	}
	var conn net.Conn
	select {
	case <-terms:
		if flavor == Rust {
			return 1 // _exit(1) in its signal handler
		}
		f.say("INFO", "vhost socket accept: Interrupted system call")
		return 1
	case conn = <-conns:
	}
	if flavor == Rust {
		f.say("INFO", "Client connected, servicing requests")
	} else {
		f.say("INFO", "virtio_session_mount: Received vhost-user socket connection")
		f.say("INFO", "virtio_loop: Entry")
	}
	switch {
	case flavor == Rust && mode == MigrationLoadFails:
		f.sayFrom(MigrationTarget, "ERROR", MigrationLoadFailure)
	case flavor == Rust && mode == MigrationSaveFails:
		f.sayFrom(MigrationTarget, "ERROR", MigrationSaveFailure)
	case mode == Hostile:
		f.hostile()
	}
	hungUp := make(chan struct{})
	go func() {
		serve(conn)
		close(hungUp)
	}()
	select {
	case <-terms:
		if flavor == Rust {
			return 1
		}
		// The sandbox parent exits 0; its child ends the session.
		f.say("INFO", "virtio_loop: ppoll interrupted, going around")
		f.say("INFO", "virtio_loop: Exit")
		return 0
	case <-hungUp:
	}
	if flavor == Rust {
		f.say("INFO", "Client disconnected, shutting down")
	} else {
		f.say("INFO", "virtio_loop: Unexpected poll revents 11") // POLLIN|POLLHUP; 19 (POLLERR too) when the client left a reply unread
		f.say("INFO", "virtio_loop: Exit")
	}
	return 0
}

// options are the arguments the fake acts on.
type options struct {
	sharedDir        string
	rlimitNofile     int    // -1: not given
	inodeFileHandles string // "" until given
	modcaps          string // the last --modcaps (virtiofsd keeps the last)
	migrationMode    string
	confirmPaths     bool
	verifyHandles    bool
}

func rustVersion() string {
	if v := os.Getenv(envVer); v != "" {
		return v
	}
	return DefaultRustVersion
}

// atLeast compares dotted version numbers.
func atLeast(v, min string) bool {
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x, _ = strconv.Atoi(a[i])
		}
		if i < len(b) {
			y, _ = strconv.Atoi(b[i])
		}
		if x != y {
			return x > y
		}
	}
	return true
}

// capabilityProblem is what the Rust one says when, as root, it cannot keep
// the capabilities it wants because the bounding set lacks one: its
// defaults, --modcaps, and DAC_READ_SEARCH for --inode-file-handles other
// than never (whose default is prefer from 1.13.3). "" when all is well.
func (o options) capabilityProblem() string {
	if os.Geteuid() != 0 {
		return "" // it leaves capabilities alone when not root
	}
	want := map[string]bool{"CHOWN": true, "DAC_OVERRIDE": true, "FOWNER": true, "FSETID": true,
		"SETGID": true, "SETUID": true, "MKNOD": true, "SETFCAP": true}
	if o.modcaps != "" {
		for _, m := range strings.Split(o.modcaps, ":") {
			if len(m) < 2 {
				return "empty modcap found: expected (+|-)capability:..."
			}
			want[strings.ToUpper(m[1:])] = m[0] == '+'
		}
	}
	mode := o.inodeFileHandles
	if mode == "" {
		mode = "never"
		if atLeast(rustVersion(), "1.13.3") {
			mode = "prefer"
		}
	}
	if mode != "never" {
		if v, set := want["DAC_READ_SEARCH"]; set && !v {
			return "can't disable DAC_READ_SEARCH when using --inode-file-handles=" + strings.ToUpper(mode[:1]) + mode[1:]
		}
		want["DAC_READ_SEARCH"] = true
	}
	bounding := boundingSet()
	for c, keep := range want {
		if keep && bounding != nil && !bounding[c] {
			return "can't apply the child capabilities: failed to sync capabilities with the kernel"
		}
	}
	return ""
}

// capNumbers are the bits of the capabilities capabilityProblem asks about.
var capNumbers = map[string]uint{"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4,
	"SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_ADMIN": 12, "SYS_CHROOT": 18, "SYS_ADMIN": 21, "SYS_NICE": 23,
	"MKNOD": 27, "SETFCAP": 31}

// boundingSet reads CapBnd of /proc/self/status; nil when it cannot.
func boundingSet() map[string]bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil
			}
			set := map[string]bool{}
			for name, bit := range capNumbers {
				set[name] = n&(1<<bit) != 0
			}
			return set
		}
	}
	return nil
}

// parse reads the arguments as the flavor's option parser does; a code
// >= 0 is the status it exits with on an argument it refuses.
func (f *fake) parse(args []string) (options, int) {
	o := options{rlimitNofile: -1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, _ := strings.Cut(a, "=")
		if a == "-o" && i+1 < len(args) {
			i++
			for _, opt := range strings.Split(args[i], ",") {
				oname, ovalue, _ := strings.Cut(opt, "=")
				if f.flavor == Rust {
					if !rustCompat[oname] {
						f.raw("error: Invalid compat argument '-o " + opt + "'\n\n" + rustUsage)
						return o, 2
					}
					f.say("WARN", "Use of deprecated option format '-o': Please specify options without it (e.g., '--cache auto' instead of '-o cache=auto')")
					continue
				}
				if !cOptions[oname] {
					f.say("INFO", "fuse: unknown option(s): `-o "+opt+"'")
					return o, 1
				}
				if oname == "source" {
					o.sharedDir = ovalue
				}
			}
			continue
		}
		switch {
		case f.flavor == Rust && name == "--shared-dir":
			o.sharedDir = value
		case f.flavor == Rust && name == "--rlimit-nofile":
			o.rlimitNofile, _ = strconv.Atoi(value)
		case f.flavor == Rust && name == "--inode-file-handles":
			o.inodeFileHandles = value
		case f.flavor == Rust && name == "--modcaps":
			o.modcaps = value
		case f.flavor == Rust && name == "--migration-mode":
			o.migrationMode = value
		case f.flavor == Rust && name == "--migration-confirm-paths":
			o.confirmPaths = true
		case f.flavor == Rust && name == "--migration-verify-handles":
			o.verifyHandles = true
		case f.flavor == Rust && strings.HasPrefix(a, "-") && !rustOptions[name]:
			f.raw("error: unexpected argument '" + a + "' found\n\n" + rustUsage)
			return o, 2
		}
	}
	return o, -1
}

const rustUsage = "Usage: virtiofsd --shared-dir <SHARED_DIR> --socket-path <SOCKET_PATH> [OPTIONS]\n\n" +
	"For more information, try '--help'.\n"

// rustOptions are the Rust virtiofsd's options the shim may pass (1.13 --help).
var rustOptions = map[string]bool{"--fd": true, "--shared-dir": true, "--cache": true, "--sandbox": true,
	"--log-level": true, "--thread-pool-size": true, "--xattr": true, "--posix-acl": true,
	"--announce-submounts": true, "--no-announce-submounts": true, "--readonly": true,
	"--inode-file-handles": true, "--modcaps": true, "--rlimit-nofile": true, "--seccomp": true,
	"--uid-map": true, "--gid-map": true, "--translate-uid": true, "--translate-gid": true,
	"--allow-direct-io": true, "--writeback": true, "--no-readdirplus": true, "--allow-mmap": true,
	"--security-label": true, "--xattrmap": true, "--tag": true, "--preserve-noatime": true,
	"--killpriv-v2": true, "--no-killpriv-v2": true, "-f": true, "-d": true,
	"--migration-mode": true, "--migration-on-error": true, "--migration-verify-handles": true,
	"--migration-confirm-paths": true}

// rustCompat are the -o options its compat parser knows (not log_level,
// not debug).
var rustCompat = map[string]bool{"source": true, "cache": true, "loglevel": true, "xattr": true,
	"no_xattr": true, "sandbox": true, "modcaps": true, "announce_submounts": true,
	"writeback": true, "no_writeback": true, "allow_direct_io": true, "no_allow_direct_io": true,
	"flock": true, "no_flock": true, "posix_lock": true, "no_posix_lock": true, "norace": true,
	"readdirplus": true, "no_readdirplus": true, "timeout": true, "killpriv_v2": true, "no_killpriv_v2": true}

// cOptions are the C virtiofsd's -o options (7.2).
var cOptions = map[string]bool{"source": true, "cache": true, "sandbox": true, "log_level": true,
	"xattr": true, "no_xattr": true, "xattrmap": true, "announce_submounts": true, "modcaps": true,
	"flock": true, "no_flock": true, "posix_lock": true, "no_posix_lock": true, "writeback": true,
	"no_writeback": true, "readdirplus": true, "no_readdirplus": true, "timeout": true, "norace": true,
	"allow_direct_io": true, "no_allow_direct_io": true, "killpriv_v2": true, "no_killpriv_v2": true,
	"posix_acl": true, "no_posix_acl": true, "security_label": true, "no_security_label": true}

// raiseNofile does what the Rust one does with RLIMIT_NOFILE: ask for
// --rlimit-nofile (default min(1000000, fs.nr_open); 0 leaves it) and, when
// the hard limit is in the way, warn and take the hard limit.
func (f *fake) raiseNofile(want int) {
	if want == 0 {
		return
	}
	if want < 0 {
		want = 1000000
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < want {
				want = n
			}
		}
	}
	lim := syscall.Rlimit{Cur: uint64(want), Max: uint64(want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		return
	}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		return
	}
	f.sayFrom("virtiofsd::limits", "WARN", fmt.Sprintf("Failure when trying to set the limit to %d, "+
		"the hard limit (%d) of open file descriptors is used instead.", want, cur.Max))
	cur.Cur = cur.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
}

// serve answers VHOST_USER_GET_FEATURES like a live backend, until hang-up.
func serve(c net.Conn) {
	defer c.Close()
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		req, size := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[8:])
		if size > 0 {
			if _, err := io.CopyN(io.Discard, c, int64(size)); err != nil {
				return
			}
		}
		if req == 1 { // GET_FEATURES
			var reply [20]byte
			binary.LittleEndian.PutUint32(reply[0:], 1)
			binary.LittleEndian.PutUint32(reply[4:], 0x5)
			binary.LittleEndian.PutUint32(reply[8:], 8)
			binary.LittleEndian.PutUint64(reply[12:], 1<<30|1<<32)
			c.Write(reply[:])
		}
	}
}

// checkInheritance reports what the shim should not have passed on: the
// socket not as --fd=3, systemd's variables, or extra descriptors.
func checkInheritance(args []string) string {
	hasFD := false
	for _, a := range args {
		if a == "--fd=3" {
			hasFD = true
		}
	}
	if !hasFD {
		return "no --fd=3 in " + strings.Join(args, " ")
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if _, ok := os.LookupEnv(v); ok {
			return "inherited " + v + " from the shim"
		}
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "read /proc/self/fd: " + err.Error()
	}
	var leaked []string
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		if fd <= 3 {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed since: ReadDir's own descriptor
		}
		if strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "/proc/") ||
			strings.HasPrefix(target, "/sys/fs/cgroup/") {
			continue // this Go runtime's poller and cgroup CPU limits, and ReadDir's own descriptor
		}
		leaked = append(leaked, e.Name()+" -> "+target)
	}
	if len(leaked) > 0 {
		return "inherited descriptors beyond 3: " + strings.Join(leaked, ", ")
	}
	return ""
}
