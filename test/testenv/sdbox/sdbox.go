// Package sdbox boots a real systemd as PID 1 of private namespaces, for tests and the demo.
//
// A box is the host's own filesystem seen through a private mount namespace,
// with systemd 252 (/lib/systemd/systemd) as PID 1 of a private PID and UTS
// namespace, booted into a minimal target of its own (journald and D-Bus
// sockets only) so that nothing the machine image enables gets started. The
// network and IPC namespaces are the host's. It needs root.
//
// With Options.Root the box boots another distribution's tree instead (the
// Debian 13 tree of package distro, say, with its systemd 257): the same
// steps, but the root is an overlay of the tree on a tmpfs, entered with
// pivot_root, so that whatever the box writes anywhere (apt-get install
// included) stays in the box and the cached tree is never modified. /proc,
// /sys (read-only) and /dev are the kernel's, /run and /tmp are fresh tmpfs,
// and the host's /etc/resolv.conf is copied in for apt. Host paths the box
// must see (shares, caches) are Options.Binds, at the same path or another.
//
// What stays inside the box, whatever runs there:
//
//   - /run, /tmp and /var/log/journal (when the host has it) are fresh tmpfs,
//     so the box's journal holds only its own entries;
//   - /etc is an overlay (upper layer on the box's /run): the box sees the
//     host's files, but what it writes there stays in the box. Plain
//     "systemctl enable --now x.socket" is safe, and so are
//     systemd-sysusers, the machine id and configs a test writes under /etc;
//   - Options.Tmpfs and Options.Overlay directories, and the parent that
//     Boot overlays when a mount point is missing on the host (see Options);
//   - /sys and /proc/sys are read-only (with Options.FullProc, /sys only,
//     and the sysctl and binfmt units are masked), which keeps udev, sysctl
//     and binfmt units from touching the host's devices and kernel settings, and
//     modprobe@.service, systemd-modules-load, -remount-fs, -random-seed
//     and -update-utmp are masked (unless Options.Units supplies them);
//   - /dev/console is a pseudo-terminal whose output, with systemd's own
//     messages before journald runs, goes to Options.Log and error messages;
//   - the box's cgroups live under sdbox/<id> of each cgroup hierarchy, not at
//     its root, so boxes side by side do not share unit cgroups.
//
// Anything else the box writes reaches the host's files (systemd-tmpfiles
// creates its usual directories under /var, for one); that is why WriteFile
// refuses such paths.
//
// A typical system test:
//
//	box := sdbox.New(t, sdbox.Options{
//		Units: map[string]string{"x.socket": socketUnit, "x.service": serviceUnit},
//		Binds: map[string]string{shimBinary: "/usr/libexec/virtiofsd-shim"},
//	})
//	out, err := box.Run(ctx, "systemctl", "enable", "--now", "x.socket")
//
// A D-Bus client in the test process reaches the box's systemd with
// SystemdBus, e.g. go-systemd's dbus.NewConnection(box.SystemdBus). Dialing
// box.Path("/run/systemd/private") directly does not work: systemd drops
// peers whose pid it cannot see, and the test process is outside the box's
// pid namespace.
package sdbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

const (
	// BootTimeout bounds how long Boot waits for the box to be running.
	BootTimeout = 20 * time.Second

	systemdPath = "/lib/systemd/systemd"
	target      = "sdbox.target"
	tailSize    = 16 << 10
)

// targetUnit is what the box boots: journald and the system D-Bus, nothing
// from the machine image. Wants= of a missing unit is ignored by systemd.
const targetUnit = `[Unit]
Description=sdbox: journald and D-Bus only
Wants=systemd-journald.socket systemd-journald-dev-log.socket dbus.socket
After=systemd-journald.socket systemd-journald-dev-log.socket dbus.socket
AllowIsolate=yes
`

// masked are units sysinit.target pulls in that would change the host: its
// loaded kernel modules, its root superblock, /var/lib/systemd/random-seed and
// /var/log/wtmp.
var masked = []string{
	"modprobe@.service",
	"systemd-modules-load.service",
	"systemd-remount-fs.service",
	"systemd-random-seed.service",
	"systemd-update-utmp.service",
}

// Options describe a box. The zero value boots an empty box named "sdbox"
// from the host's own root.
//
// Mount points of Tmpfs, Overlay and Binds are resolved on the host (symbolic
// links followed). A mount point missing on the host is created inside the
// box only: under a tmpfs or overlay of the box when there is one, otherwise
// Boot overlays its nearest existing parent directory (never "/"), so that,
// for example, Tmpfs "/etc/virtiofsd" overlays /etc and Binds to
// "/usr/libexec/virtiofsd-shim" overlays /usr/libexec. An overlay shows the
// directory's own filesystem: host mounts below it are not seen in the box.
type Options struct {
	// Name is the value of the container environment variable systemd sees;
	// default "sdbox".
	Name string
	// Units maps a unit file name (or a relative path such as
	// "x.service.d/override.conf") to its content, written to the box's
	// /run/systemd/system before boot.
	Units map[string]string
	// Tmpfs are directories that get an empty tmpfs inside the box.
	Tmpfs []string
	// Overlay are directories the box sees with the host's content but whose
	// changes stay inside the box.
	Overlay []string
	// Binds maps a host path (file or directory) to where it is bind mounted
	// inside the box. Sources anywhere, /tmp and /run included, work: they
	// are bound before those are mounted over.
	Binds map[string]string
	// Log receives systemd's console output. It must accept writes until
	// Close returns.
	Log io.Writer
	// FullProc leaves /proc/sys writable, as on a real host, instead of
	// binding it read-only over itself, and masks systemd-sysctl.service
	// and systemd-binfmt's units instead. A process in a user namespace may mount a proc of its own
	// only when a proc with nothing mounted over it is visible
	// (mnt_already_visible in the kernel): the sandbox of a rootless
	// virtiofsd does, and a box without FullProc refuses it ("MountProc:
	// Operation not permitted"), as a unit with ProtectKernelTunables=yes
	// does on a real host.
	FullProc bool
	// Root, when not empty, is a distribution tree on the host (with its
	// own /lib/systemd/systemd) that the box boots instead of the host's
	// root. The box sees it through an overlay on a tmpfs: the tree itself
	// is never written. Mount points of Tmpfs and Binds are then paths in
	// the tree, created there when missing (through the overlay), and
	// Overlay is not needed (the whole root is one): its directories must
	// still be absolute paths.
	Root string
}

// Box is a booted systemd. Its methods are safe for concurrent use.
type Box struct {
	name    string
	pid     int
	pidNS   *os.File // holds the namespace, so its inode is not reused before Close checks it
	state   string   // host temp dir: units and bind staging
	cgroup  string   // relative cgroup path, "sdbox/<id>"
	private []string // paths inside whose writes stay inside (or are binds)
	console *console
	done    chan struct{} // closed once systemd is reaped
	waitErr error         // valid after done
	booted  bool          // Boot succeeded: an exit before Close is an error

	closeOnce sync.Once
	closeErr  error
}

// RequireRoot skips the test when not running as root, the only reason a
// box cannot be booted that is not a failure.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (make unit): skips the levels that boot a private systemd, a guest or the real virtiofsd")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: boots a private systemd as PID 1 of new PID and mount namespaces")
	}
}

// New boots a box for a test (skipping it when not root) and closes it when
// the test ends; a box that does not boot, or leaves processes behind,
// fails the test.
func New(t testing.TB, o Options) *Box {
	t.Helper()
	RequireRoot(t)
	b, err := Boot(t.Context(), o)
	if err != nil {
		t.Fatalf("boot systemd box: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close systemd box: %v", err)
		}
	})
	return b
}

// Boot starts a box and returns once "systemctl is-system-running" inside it
// says running or degraded, waiting at most BootTimeout (or until ctx is
// done). On failure nothing is left running and the error carries the tail of
// systemd's console. ctx does not bound the box's life once Boot returns:
// Close does.
func Boot(ctx context.Context, o Options) (_ *Box, err error) {
	if o.Name == "" {
		o.Name = "sdbox"
	}
	p, err := plan(o)
	if err != nil {
		return nil, err
	}
	state, err := os.MkdirTemp("/var/tmp", "sdbox-")
	if err != nil {
		return nil, fmt.Errorf("create box state dir: %w", err)
	}
	b := &Box{
		name:    o.Name,
		state:   state,
		cgroup:  "sdbox/" + filepath.Base(state),
		private: p.private,
		done:    make(chan struct{}),
	}
	defer func() {
		if err != nil {
			if cerr := b.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	if b.console, err = openConsole(o.Log); err != nil {
		return nil, err
	}
	script, err := b.prepare(o, p)
	if err != nil {
		return nil, err
	}
	if err := b.start(script); err != nil {
		return nil, err
	}
	if err := b.waitRunning(ctx); err != nil {
		return nil, err
	}
	b.booted = true
	return b, nil
}

// bootPlan is Options resolved against the host filesystem.
type bootPlan struct {
	overlays []string          // inside paths, parents first
	tmpfs    []string          // inside paths, parents first
	binds    [][2]string       // host source, inside target; parents first
	create   map[string]bool   // mount points to create inside (true: directory)
	units    map[string]string // validated unit names
	private  []string
	root     string // the tree to boot; "" for the host's root
}

func plan(o Options) (*bootPlan, error) {
	if o.Root != "" {
		return planTree(o)
	}
	p := &bootPlan{create: map[string]bool{}, units: map[string]string{}}
	base := []string{"/run", "/tmp", "/etc"}
	if fi, err := os.Stat("/var/log/journal"); err == nil && fi.IsDir() {
		base = append(base, "/var/log/journal")
	}
	covered := append([]string(nil), base...)
	under := func(path string) bool {
		for _, c := range covered {
			if path == c || strings.HasPrefix(path, c+"/") {
				return true
			}
		}
		return false
	}
	// mountPoint resolves an inside path and makes sure it can be created
	// without touching the host.
	mountPoint := func(what, path string, dir bool) (string, error) {
		if !filepath.IsAbs(path) || strings.ContainsAny(path, ",:\n") {
			return "", fmt.Errorf("%s %q: need an absolute path without ',', ':' or newlines", what, path)
		}
		rp, missing, err := resolve(path)
		if err != nil {
			return "", fmt.Errorf("%s %q: %w", what, path, err)
		}
		if missing == "" {
			return rp, nil
		}
		if !under(rp) {
			parent := strings.TrimSuffix(rp, "/"+missing)
			if parent == "" || parent == "/" {
				return "", fmt.Errorf("%s %q: %s does not exist and / cannot be overlaid: create it on the host or put it under Tmpfs", what, path, rp)
			}
			p.overlays = append(p.overlays, parent)
			covered = append(covered, parent)
		}
		p.create[rp] = dir
		return rp, nil
	}
	for _, d := range o.Overlay {
		rp, missing, err := resolve(d)
		if err == nil && missing != "" {
			err = errors.New("no such directory on the host")
		}
		if err != nil || !filepath.IsAbs(d) || strings.ContainsAny(d, ",:\n") {
			return nil, fmt.Errorf("overlay %q: need an existing absolute directory without ',' or ':' (%v)", d, err)
		}
		p.overlays = append(p.overlays, rp)
		covered = append(covered, rp)
	}
	for _, d := range sortedByDepth(o.Tmpfs) {
		rp, err := mountPoint("tmpfs", d, true)
		if err != nil {
			return nil, err
		}
		p.tmpfs = append(p.tmpfs, rp)
		covered = append(covered, rp)
	}
	targets := map[string]string{}
	for src, dst := range o.Binds {
		targets[dst] = src
	}
	var bindTargets []string
	for _, dst := range sortedByDepth(keys(targets)) {
		src := targets[dst]
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("bind source: %w", err)
		}
		rp, err := mountPoint("bind target", dst, fi.IsDir())
		if err != nil {
			return nil, err
		}
		p.binds = append(p.binds, [2]string{src, rp})
		bindTargets = append(bindTargets, rp)
	}
	p.overlays = sortedByDepth(append(p.overlays, "/etc"))
	if err := p.addUnits(o.Units); err != nil {
		return nil, err
	}
	p.private = append(covered, bindTargets...)
	return p, nil
}

func (p *bootPlan) addUnits(units map[string]string) error {
	for name, content := range units {
		if !filepath.IsLocal(name) || name == target {
			return fmt.Errorf("unit %q: need a file name or relative path under /run/systemd/system other than %s", name, target)
		}
		p.units[name] = content
	}
	return nil
}

// planTree resolves Options for a box that boots o.Root. Mount points are
// paths in the tree, created inside the box when missing; symbolic links in
// them are followed inside the box, in the tree.
func planTree(o Options) (*bootPlan, error) {
	p := &bootPlan{create: map[string]bool{}, units: map[string]string{}, root: o.Root}
	if !filepath.IsAbs(o.Root) {
		return nil, fmt.Errorf("root %q: need an absolute path to a distribution tree", o.Root)
	}
	if _, err := os.Stat(filepath.Join(o.Root, systemdPath)); err != nil {
		return nil, fmt.Errorf("root %q: not a tree with systemd (build it with package distro): %w", o.Root, err)
	}
	check := func(what, path string) error {
		if !filepath.IsAbs(path) || filepath.Clean(path) == "/" || strings.ContainsAny(path, ",:\n") {
			return fmt.Errorf("%s %q: need an absolute path other than / without ',', ':' or newlines", what, path)
		}
		return nil
	}
	for _, d := range o.Overlay {
		if err := check("overlay", d); err != nil {
			return nil, err
		}
	}
	for _, d := range sortedByDepth(o.Tmpfs) {
		if err := check("tmpfs", d); err != nil {
			return nil, err
		}
		d = filepath.Clean(d)
		p.tmpfs = append(p.tmpfs, d)
		p.create[d] = true
	}
	targets := map[string]string{}
	for src, dst := range o.Binds {
		targets[dst] = src
	}
	for _, dst := range sortedByDepth(keys(targets)) {
		src := targets[dst]
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("bind source: %w", err)
		}
		if err := check("bind target", dst); err != nil {
			return nil, err
		}
		dst = filepath.Clean(dst)
		p.binds = append(p.binds, [2]string{src, dst})
		p.create[dst] = fi.IsDir()
	}
	if err := p.addUnits(o.Units); err != nil {
		return nil, err
	}
	p.private = []string{"/"} // the whole root is the box's own overlay
	return p, nil
}

// resolve follows symbolic links in the longest existing prefix of path and
// returns the resolved path and the part of it that does not exist.
func resolve(path string) (resolved, missing string, err error) {
	path = filepath.Clean(path)
	existing := path
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", "", err
		}
		existing = filepath.Dir(existing)
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", "", err
	}
	missing = strings.TrimPrefix(strings.TrimPrefix(path, existing), "/")
	return filepath.Join(real, missing), missing, nil
}

// prepare writes the units and bind staging points into the state dir and
// returns the script that turns the new namespaces into the box.
func (b *Box) prepare(o Options, p *bootPlan) (string, error) {
	units := filepath.Join(b.state, "units")
	write := func(name, content string) error {
		path := filepath.Join(units, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write unit %s: %w", name, err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write unit %s: %w", name, err)
		}
		return nil
	}
	if err := write(target, targetUnit); err != nil {
		return "", err
	}
	for name, content := range p.units {
		if err := write(name, content); err != nil {
			return "", err
		}
	}
	mask := masked
	if o.FullProc {
		mask = append(mask[:len(mask):len(mask)], "systemd-sysctl.service", "systemd-binfmt.service",
			"proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount")
	}
	for _, name := range mask {
		if _, ok := p.units[name]; !ok {
			if err := os.Symlink("/dev/null", filepath.Join(units, name)); err != nil {
				return "", fmt.Errorf("mask %s: %w", name, err)
			}
		}
	}

	var s strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	line("set -eu")
	// Own cgroup before systemd starts: systemd takes it as its root.
	line("for h in /sys/fs/cgroup /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do")
	line("  [ -e \"$h/cgroup.procs\" ] || continue")
	line("  mkdir -p \"$h\"/%s && echo $$ >\"$h\"/%s/cgroup.procs", q(b.cgroup), q(b.cgroup))
	line("done")
	line("mount --make-rprivate /")
	// Stage bind sources before /run and /tmp are mounted over, and before
	// the root changes.
	for i, bd := range p.binds {
		stage := filepath.Join(b.state, "stage", strconv.Itoa(i))
		if err := mkMountPoint(stage, isDir(bd[0])); err != nil {
			return "", fmt.Errorf("stage bind %s: %w", bd[0], err)
		}
		line("mount --rbind %s %s", q(bd[0]), q(stage))
	}
	// old is where the host's root is seen from the box's root while the
	// script runs: "" when the box boots the host's root, /.sdbox-old once a
	// tree's overlay is the root.
	old := ""
	if p.root != "" {
		old = "/.sdbox-old"
		newRoot, rw := filepath.Join(b.state, "root"), filepath.Join(b.state, "rw")
		for _, d := range []string{newRoot, rw} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return "", fmt.Errorf("box root: %w", err)
			}
		}
		line("mount -t tmpfs -o mode=0755 sdbox-root-rw %s", q(rw))
		line("mkdir -p %s/upper %s/work", q(rw), q(rw))
		line("mount -t overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work sdbox-root %s", q(p.root), q(rw), q(rw), q(newRoot))
		line("cd %s && mkdir -p .%s && pivot_root . .%s && cd /", q(newRoot), old, old)
		line("mount --rbind %s/sys /sys", old)
		line("mount --rbind %s/dev /dev", old)
		// For apt: the tree's resolv.conf may be a link into /run.
		line("rm -f /etc/resolv.conf && cp -L %s/etc/resolv.conf /etc/resolv.conf", old)
	}
	line("mount -t proc -o nosuid,nodev,noexec proc /proc")
	if !o.FullProc {
		line("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys")
	}
	line("mount -o remount,bind,ro /sys")
	line("mount -t tmpfs -o mode=0755,nosuid,nodev sdbox-run /run")
	line("mkdir -p /run/systemd/system && cp -a %s/. /run/systemd/system/", q(old+units))
	line("mount -t tmpfs -o mode=1777,nosuid,nodev sdbox-tmp /tmp")
	if p.root == "" && isDir("/var/log/journal") {
		line("mount -t tmpfs -o mode=2755,nosuid,nodev sdbox-journal /var/log/journal")
	}
	for i, d := range p.overlays {
		up := fmt.Sprintf("/run/sdbox/overlay/%d", i)
		line("mkdir -p %s/upper %s/work", up, up)
		line("mount -t overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work sdbox-overlay %s", q(d), up, up, q(d))
	}
	mkdir := func(path string) {
		if dir, ok := p.create[path]; ok {
			if dir {
				line("mkdir -p %s", q(path))
			} else {
				line("[ -e %s ] || { mkdir -p %s && touch %s; }", q(path), q(filepath.Dir(path)), q(path))
			}
		}
	}
	for _, d := range p.tmpfs {
		mkdir(d)
		line("mount -t tmpfs -o mode=0755 sdbox-tmpfs %s", q(d))
	}
	for i, bd := range p.binds {
		mkdir(bd[1])
		line("mount --move %s %s", q(old+filepath.Join(b.state, "stage", strconv.Itoa(i))), q(bd[1]))
	}
	line("mount --bind %s /dev/console", q(b.console.pts))
	if old != "" {
		line("umount -l %s && rmdir %s", old, old)
	}
	// --log-target=journal: console (our stderr), not the host's kmsg, until journald runs.
	line("exec %s --system --unit=%s --log-target=journal", systemdPath, target)
	return s.String(), nil
}

func mkMountPoint(path string, dir bool) error {
	if dir {
		return os.MkdirAll(path, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, nil, 0o644)
}

// start runs the script as PID 1 of new namespaces. The process is started
// from a thread locked until it is reaped, so that Pdeathsig kills the box if
// the test binary dies (golang/go#27505).
func (b *Box) start(script string) error {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "container="+b.name)
	cmd.Stdout = b.console
	cmd.Stderr = b.console
	cmd.WaitDelay = 5 * time.Second // in case a pipe outlives the namespace
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(b.done)
			return
		}
		b.pid = cmd.Process.Pid
		started <- nil
		b.waitErr = cmd.Wait()
		close(b.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start systemd box: %w", err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", b.pid))
	if err != nil {
		return fmt.Errorf("open the box's pid namespace: %w", err)
	}
	b.pidNS = ns
	return nil
}

func (b *Box) waitRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	state := "not queried"
	for {
		select {
		case <-b.done:
			return fmt.Errorf("box %s: setup or systemd exited during boot (%v); console:\n%s", b.name, b.waitErr, b.console)
		case <-ctx.Done():
			return fmt.Errorf("box %s: systemd not running after %v (is-system-running: %s): %w; console:\n%s",
				b.name, BootTimeout, state, ctx.Err(), b.console)
		case <-tick.C:
		}
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		out, _ := b.Command(qctx, "systemctl", "is-system-running").CombinedOutput()
		qcancel()
		state = strings.TrimSpace(string(out))
		if state == "running" || state == "degraded" {
			return nil
		}
	}
}

// PID is the host pid of the box's systemd.
func (b *Box) PID() int { return b.pid }

// Command prepares name to run inside the box's mount, PID and UTS
// namespaces (nsenter), with the test's environment.
func (b *Box) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"-t", strconv.Itoa(b.pid), "-m", "-p", "-u", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", argv...)
}

// Run runs name inside the box and returns its combined output; a failure's
// error includes the output.
func (b *Box) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := b.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s in box %s: %w: %s", strings.Join(append([]string{name}, args...), " "), b.name, err, out)
	}
	return string(out), nil
}

// Path is the host path that reaches p inside the box, through
// /proc/<pid>/root. It is short enough for a unix socket address (under 108
// bytes) when p is, say, /run/systemd/private.
func (b *Box) Path(p string) string {
	return filepath.Join("/proc", strconv.Itoa(b.pid), "root", p)
}

// SystemdBus connects to the box's systemd on its private bus and
// authenticates; its signature fits go-systemd's dbus.NewConnection. The
// connection goes through systemd-stdio-bridge run inside the box, which
// exits when the connection is closed.
func (b *Box) SystemdBus() (*dbus.Conn, error) {
	private, err := config.System.PrivateBus(func(string) string { return "" }) // the system scope reads no environment
	if err != nil {
		return nil, fmt.Errorf("connect to box %s systemd: %w", b.name, err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("connect to box %s systemd: %w", b.name, err)
	}
	local, remote := os.NewFile(uintptr(fds[0]), "sdbox-bus"), os.NewFile(uintptr(fds[1]), "sdbox-bus-bridge")
	defer local.Close()
	cmd := b.Command(context.Background(), "systemd-stdio-bridge", "--bus-path=unix:path="+private)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = remote, remote, b.console
	err = cmd.Start()
	remote.Close()
	if err != nil {
		return nil, fmt.Errorf("connect to box %s systemd: start systemd-stdio-bridge: %w", b.name, err)
	}
	go func() { _ = cmd.Wait() }() // reap it; its failures show as a broken connection
	nc, err := net.FileConn(local)
	if err != nil {
		return nil, fmt.Errorf("connect to box %s systemd: %w", b.name, err)
	}
	conn, err := dbus.NewConn(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to box %s systemd: %w", b.name, err)
	}
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to box %s systemd: authenticate: %w", b.name, err)
	}
	return conn, nil
}

// WriteFile writes a file inside the box, creating its parent directories.
// It refuses paths whose writes would reach the host's own files: path must
// be under /run, /tmp, /etc/systemd, /var/log/journal, an Options.Tmpfs or
// Overlay directory (or one Boot overlaid), or a bind target. A box booted
// from Options.Root takes any path: its whole root is its own.
func (b *Box) WriteFile(path string, data []byte, perm os.FileMode) error {
	path = filepath.Clean(path)
	if !b.isPrivate(path) {
		return fmt.Errorf("write %s in box %s: not under a private mount of the box (%s); add its directory to Options.Tmpfs or Overlay",
			path, b.name, strings.Join(b.private, ", "))
	}
	hp := b.Path(path)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return fmt.Errorf("write %s in box %s: %w", path, b.name, err)
	}
	if err := os.WriteFile(hp, data, perm); err != nil {
		return fmt.Errorf("write %s in box %s: %w", path, b.name, err)
	}
	if err := os.Chmod(hp, perm); err != nil { // not subject to umask
		return fmt.Errorf("write %s in box %s: %w", path, b.name, err)
	}
	return nil
}

func (b *Box) isPrivate(path string) bool {
	for _, c := range b.private {
		if c == "/" || path == c || strings.HasPrefix(path, c+"/") {
			return true
		}
	}
	return false
}

// Close kills the box's systemd, which takes every process of the box with
// it, reaps it, checks that no process of the box is left and removes the
// box's cgroups and state dir. It reports a systemd that had exited before
// Close. Calling it again returns the first result.
func (b *Box) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Box) close() error {
	var errs []error
	if b.pid != 0 {
		select {
		case <-b.done:
			if !b.booted {
				break
			}
			errs = append(errs, fmt.Errorf("box %s: systemd exited before Close (%v); console:\n%s", b.name, b.waitErr, b.console))
		default:
			if err := unix.Kill(b.pid, unix.SIGKILL); err != nil {
				errs = append(errs, fmt.Errorf("kill box %s systemd (pid %d): %w", b.name, b.pid, err))
			}
		}
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("box %s: systemd (pid %d) not reaped 10s after SIGKILL", b.name, b.pid))
		}
	}
	if b.pidNS != nil {
		if left := b.processes(); len(left) > 0 {
			errs = append(errs, fmt.Errorf("box %s: processes left in its pid namespace: %v", b.name, left))
		}
		b.pidNS.Close()
	}
	if b.console != nil {
		b.console.close()
	}
	if err := b.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(b.state); err != nil {
		errs = append(errs, fmt.Errorf("remove box %s state dir: %w", b.name, err))
	}
	return errors.Join(errs...)
}

// processes lists the host pids still in the box's pid namespace.
func (b *Box) processes() []int {
	var want unix.Stat_t
	if err := unix.Fstat(int(b.pidNS.Fd()), &want); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Processes lists the host pids of the processes in the box, systemd
// included.
func (b *Box) Processes() []int { return b.processes() }

// removeCgroups removes sdbox/<id> from each cgroup hierarchy, deepest first.
func (b *Box) removeCgroups() error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var errs []error
	for _, root := range roots {
		top := filepath.Join(root, b.cgroup)
		var dirs []string
		_ = filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirRetry(dirs[i]); err != nil {
				errs = append(errs, fmt.Errorf("remove box %s cgroup: %w", b.name, err))
			}
		}
		_ = unix.Rmdir(filepath.Dir(top)) // "sdbox": busy while other boxes run
	}
	return errors.Join(errs...)
}

// rmdirRetry retries EBUSY: a cgroup stays busy briefly after its last
// process is reaped.
func rmdirRetry(dir string) error {
	var err error
	for range 50 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

// console is the box's /dev/console, a pseudo-terminal, and systemd's
// stdout and stderr: it keeps their last tailSize bytes and copies them to w.
type console struct {
	pts    string   // the terminal's name, bound on the box's /dev/console
	master *os.File // nil when not opened
	slave  *os.File // held open so that reading master does not fail early
	copied chan struct{}

	mu  sync.Mutex
	buf []byte
	w   io.Writer
}

func openConsole(w io.Writer) (*console, error) {
	c := &console{w: w, copied: make(chan struct{})}
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open console terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("unlock console terminal: %w", err)
	}
	c.pts = fmt.Sprintf("/dev/pts/%d", n)
	slave, err := os.OpenFile(c.pts, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("open console terminal: %w", err)
	}
	c.master, c.slave = master, slave
	go func() {
		_, _ = io.Copy(c, master) // ends with EIO or on close
		close(c.copied)
	}()
	return c, nil
}

// close stops the copy; call it once the box is dead.
func (c *console) close() {
	if c.master == nil {
		return
	}
	c.slave.Close()
	c.master.Close()
	<-c.copied
}

func (c *console) Write(p []byte) (int, error) {
	n := len(p)
	p = bytes.ReplaceAll(p, []byte("\r"), nil) // the terminal turns \n into \r\n
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	if len(c.buf) > tailSize {
		c.buf = append(c.buf[:0:0], c.buf[len(c.buf)-tailSize:]...)
	}
	if c.w != nil {
		_, _ = c.w.Write(p) // a broken debug log must not stop the box
	}
	return n, nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(bytes.TrimSpace(c.buf))
}

// q quotes s for sh.
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func keys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// sortedByDepth sorts paths parents first, so a mount never hides a deeper one.
func sortedByDepth(paths []string) []string {
	out := append([]string(nil), paths...)
	sort.SliceStable(out, func(i, j int) bool {
		di, dj := strings.Count(filepath.Clean(out[i]), "/"), strings.Count(filepath.Clean(out[j]), "/")
		if di != dj {
			return di < dj
		}
		return out[i] < out[j]
	})
	return out
}
