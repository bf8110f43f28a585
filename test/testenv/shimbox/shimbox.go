// Package shimbox boots a private systemd with virtiofsd-shim's own unit
// files and binary installed, for system tests, the demo and benchmarks.
package shimbox

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// Where things are inside the box, as a package installs them.
const (
	BinaryPath = "/usr/libexec/virtiofsd-shim"
	// GeneratorPath is the systemd generator: the binary again, which acts
	// as the generator under this name (a symbolic link in the packages).
	GeneratorPath = "/usr/lib/systemd/system-generators/virtiofsd-shim-generator"
	// UserGeneratorPath is the same generator for user managers.
	UserGeneratorPath = "/usr/lib/systemd/user-generators/virtiofsd-shim-generator"
	ConfigDir         = "/etc/virtiofsd"
	// UserUnitDir is where the user units go, for user managers in the box.
	UserUnitDir = "/usr/lib/systemd/user"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Binary builds virtiofsd-shim once per test process into
// /var/tmp/virtiofsd-shim-test/<tree>/bin/<content>/virtiofsd-shim (outside the
// box's private /tmp; one folder per source tree, so that checkouts tested
// side by side never run each other's build) and returns its path.
// VIRTIOFSD_SHIM_BINARY overrides it with a prebuilt binary (an installed
// package's, say).
//
// The path is named by the binary's content and never replaced
// (storeByContent): a build renamed over the path another process's box was
// bind-mounting mid-boot failed that boot ("mount: ... No such file or
// directory", CI, 2026-12-03).
func Binary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("VIRTIOFSD_SHIM_BINARY"); p != "" {
			builtBin = p
			return
		}
		builtBin, buildErr = build()
	})
	return builtBin, buildErr
}

func build() (string, error) {
	dir, err := buildDir()
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".build-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// As make build and the packages build it.
	cmd := exec.Command(filepath.Join(testdir.RepoRoot(), "scripts", "build-binary.sh"), tmp.Name(), "test")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	content, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", err
	}
	d, err := storeByContent(filepath.Join(dir, "bin"), content, func(dst string) error {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		// A link, unlike a rename, never replaces a path that exists.
		return os.Link(tmp.Name(), filepath.Join(dst, "virtiofsd-shim"))
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "virtiofsd-shim"), nil
}

// storeByContent keeps a build in parent/<hash of content>: place puts it
// at that path, which it must never replace (an error of fs.ErrExist or
// ENOTEMPTY there means the same content built by another process is in
// place, and is used). Test processes of one tree run side by side, and a
// box of one may be bind-mounting or installing what another built. Builds
// not used for a day are removed.
func storeByContent(parent string, content []byte, place func(dst string) error) (string, error) {
	dst := filepath.Join(parent, fmt.Sprintf("%x", sha256.Sum256(content))[:12])
	old, _ := os.ReadDir(parent)
	for _, e := range old {
		if fi, err := e.Info(); err == nil && filepath.Join(parent, e.Name()) != dst && time.Since(fi.ModTime()) > 24*time.Hour {
			_ = os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	if err := place(dst); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return "", err
	}
	_ = os.Chtimes(dst, time.Now(), time.Now()) // in use: not old
	return dst, nil
}

// buildDir is where this source tree's test builds go:
// /var/tmp/virtiofsd-shim-test/<tree>, outside the boxes' private /tmp.
func buildDir() (string, error) {
	dir := filepath.Join("/var/tmp/virtiofsd-shim-test", fmt.Sprintf("%x", sha256.Sum256([]byte(testdir.RepoRoot())))[:12])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create the test build folder: %w", err)
	}
	return dir, nil
}

// Units returns the project's unit files, by name, from units/, or from the
// folder in VIRTIOFSD_SHIM_UNITS (e.g. /usr/lib/systemd/system, to test what
// a package installed).
func Units() (map[string]string, error) {
	dir := os.Getenv("VIRTIOFSD_SHIM_UNITS")
	if dir == "" {
		dir = filepath.Join(testdir.RepoRoot(), "units")
	}
	units := map[string]string{}
	for _, name := range []string{"virtiofsd@.socket", "virtiofsd@.service"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		units[name] = string(b)
	}
	return units, nil
}

// UserUnits returns the host paths of the project's user unit files, by
// name, from units/user, or from the folder in VIRTIOFSD_SHIM_USER_UNITS
// (e.g. /usr/lib/systemd/user, to test what a package installed).
func UserUnits() (map[string]string, error) {
	dir := os.Getenv("VIRTIOFSD_SHIM_USER_UNITS")
	if dir == "" {
		dir = filepath.Join(testdir.RepoRoot(), "units", "user")
	}
	units := map[string]string{}
	for _, name := range []string{"virtiofsd@.socket", "virtiofsd@.service"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
		units[name] = p
	}
	return units, nil
}

// Box is a private systemd with the shim installed, plus a host folder
// (Root, under /var/tmp) for shared directories the box can see.
type Box struct {
	*sdbox.Box
	Root string
	// Platform is the leg the box runs.
	Platform Platform
}

// Options adds to sdbox.Options.
type Options struct {
	Name string
	// Units, when set, replaces the project's unit files (for a bare
	// virtiofsd unit in benchmarks, say); extra units are added.
	ExtraUnits map[string]string
	// Overlay are more directories whose changes stay in the box
	// (sdbox.Options.Overlay): /var/lib/libvirt for libvirt, say.
	Overlay []string
	Log     io.Writer
	// FullProc: see sdbox.Options.FullProc (rootless instances need it).
	FullProc bool
	// Platform is the leg to boot; the zero value is Debian12.
	Platform Platform
}

// Boot boots a box of the leg o.Platform with the shim installed and an
// /etc/virtiofsd of the box's own. On Debian 12 that is the host's root with
// the project's units in /run/systemd/system, its user units in
// /usr/lib/systemd/user (bound, as a package installs them), the binary at
// /usr/libexec/virtiofsd-shim, the generator at GeneratorPath and
// UserGeneratorPath and an empty /etc/virtiofsd. On Debian 13 it is the
// Debian 13 tree with the project's .deb installed by apt-get inside the box
// (virtiofsd and the generator links come with it) and the host's /var/tmp
// (Root, the test builds) seen at the same path; its postinst's
// daemon-reload runs the generator.
// ExtraUnits go to /run/systemd/system on both, ahead of a package's units.
func Boot(ctx context.Context, o Options) (*Box, error) {
	name := o.Name
	if name == "" {
		name = "shimbox"
	}
	tree, err := o.Platform.Tree(ctx)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("/var/tmp", "shimbox-")
	if err != nil {
		return nil, err
	}
	so := sdbox.Options{Name: name, Units: map[string]string{}, Overlay: o.Overlay, FullProc: o.FullProc, Log: o.Log}
	var deb string
	if tree == nil {
		err = debian12Files(root, &so)
	} else {
		var pkgs Build
		if pkgs, err = Packages(ctx); err == nil {
			deb = pkgs.Deb
			so.Root = tree.Root
			so.Binds = map[string]string{"/var/tmp": "/var/tmp"}
		}
	}
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	for k, v := range o.ExtraUnits {
		so.Units[k] = v
	}
	b, err := sdbox.Boot(ctx, so)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	box := &Box{Box: b, Root: root, Platform: o.Platform}
	if deb != "" {
		if err := box.InstallPackage(ctx, deb); err != nil {
			return nil, errors.Join(err, box.Close())
		}
	}
	return box, nil
}

// debian12Files sets up so for the Debian 12 leg, the host's root: the
// project's units, user units, binary and generators bound at their
// installed paths, and an empty /etc/virtiofsd. The generators are the
// binary under another name; a bind needs a source of its own, and a
// symbolic link (in root) to the binary binds the binary.
func debian12Files(root string, so *sdbox.Options) error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	if so.Units, err = Units(); err != nil {
		return err
	}
	so.Tmpfs = []string{ConfigDir}
	so.Binds = map[string]string{bin: BinaryPath}
	for link, dst := range map[string]string{".generator": GeneratorPath, ".user-generator": UserGeneratorPath} {
		gen := filepath.Join(root, link)
		if err := os.Symlink(bin, gen); err != nil {
			return err
		}
		so.Binds[gen] = dst
	}
	userUnits, err := UserUnits()
	if err != nil {
		return err
	}
	for name, path := range userUnits {
		so.Binds[path] = filepath.Join(UserUnitDir, name)
	}
	return nil
}

// InstallPackage installs a .deb (a path the box sees) with apt-get inside
// the box, as a user does: apt resolves its dependencies from the box's
// package lists and cache.
func (b *Box) InstallPackage(ctx context.Context, deb string) error {
	out, err := b.Run(ctx, "env", "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"apt-get", "install", "--yes", "--no-install-recommends", deb)
	if err != nil {
		return fmt.Errorf("install %s in the %s box: %w\n%s", filepath.Base(deb), b.Platform, err, out)
	}
	return nil
}

// New boots a box for a test and tears it down at its end; it skips, saying
// why, when not root.
func New(t testing.TB, o Options) *Box {
	t.Helper()
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Boot(ctx, o)
	if err != nil {
		t.Fatalf("boot a private systemd with virtiofsd-shim: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("tear the box down: %v", err)
		}
	})
	return b
}

// Close tears the box down and removes Root.
func (b *Box) Close() error {
	err := b.Box.Close()
	if rerr := os.RemoveAll(b.Root); err == nil {
		err = rerr
	}
	return err
}

// Share makes a shared directory under Root and returns its path.
func (b *Box) Share(name string) (string, error) {
	dir := filepath.Join(b.Root, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// Configure writes /etc/virtiofsd/<instance>.conf inside the box, mode 0644.
func (b *Box) Configure(instance, content string) error {
	return b.WriteFile(filepath.Join(ConfigDir, instance+".conf"), []byte(content), 0o644)
}

// AddInstance makes a share named after the instance, configures it with
// SHARED_DIR and any extra lines, and returns the share.
func (b *Box) AddInstance(instance string, extra ...string) (string, error) {
	dir, err := b.Share(instance)
	if err != nil {
		return "", err
	}
	conf := "SHARED_DIR=" + dir + "\n" + strings.Join(extra, "\n")
	return dir, b.Configure(instance, conf+"\n")
}

// Systemctl runs systemctl inside the box.
func (b *Box) Systemctl(ctx context.Context, args ...string) (string, error) {
	return b.Run(ctx, "systemctl", args...)
}

// Socket is the host path that reaches an instance's socket inside the box.
func (b *Box) Socket(instance string) string { return b.Path(SocketPath(instance)) }

// RuntimeDir is the system scope's runtime folder in a box, systemd's %t:
// config.Scope.RuntimeDir, which the product's paths start from.
func RuntimeDir() string { return must(config.System.RuntimeDir(noEnv)) }

// SocketPath is an instance's socket as the box's own programs see it:
// config.Scope.SocketPath of the system scope.
func SocketPath(instance string) string { return must(config.System.SocketPath(noEnv, instance)) }

// noEnv is an empty environment: the system scope reads none.
func noEnv(string) string { return "" }

// must is a path of config.Scope that cannot fail: the system scope's, or
// a user's with XDG_RUNTIME_DIR set.
func must(path string, err error) string {
	if err != nil {
		panic("shimbox: " + err.Error())
	}
	return path
}

// Dial connects to an instance's socket like a VM would and checks that a
// live vhost-user backend answers GET_FEATURES (vhostuser.Probe). The caller
// closes the connection, which ends the session.
func (b *Box) Dial(instance string, timeout time.Duration) (net.Conn, error) {
	return vhostuser.Probe(b.Socket(instance), timeout)
}

// Session is Dial, then a wait for systemd and the shim to show the
// session: the instance's service active/running, and its shim's typed
// state serving. virtiofsd answers within timeout; systemd gets 20 s more
// to catch up. The two are not ordered: virtiofsd accepts the moment it
// has printed its readiness line, while READY=1 and the state still pass
// through the shim and systemd, so a client can be answered while the unit
// is, for a moment, still activating.
func (b *Box) Session(instance string, timeout time.Duration) (net.Conn, error) {
	c, err := b.Dial(instance, timeout)
	if err != nil {
		return nil, err
	}
	unit := "virtiofsd@" + instance + ".service"
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last, err = b.Systemctl(context.Background(), "show", "-p", "ActiveState,SubState", unit)
		if err != nil {
			break
		}
		if !strings.Contains(last, "ActiveState=active\n") || !strings.Contains(last, "SubState=running") {
			continue
		}
		st, serr := b.LiveState(context.Background(), instance)
		if serr != nil {
			err = serr
			break
		}
		if st != nil && st.Phase == state.Serving {
			return c, nil
		}
		last += fmt.Sprintf("\nstate: %+v", st)
	}
	c.Close()
	return nil, fmt.Errorf("%s answered, but systemd and its state do not show it serving: %v\n%s", unit, err, last)
}

// JournalEntry is one entry of the box's journal: field name to value.
type JournalEntry map[string]string

// Journal returns the entries of the box's journal that match args
// (journalctl arguments: -u UNIT, FIELD=VALUE, ...), after journald has
// written what it was sent (journalctl --sync).
func (b *Box) Journal(ctx context.Context, args ...string) ([]JournalEntry, error) {
	return b.journal(ctx, b.Command, args...)
}

// Messages returns the MESSAGE of each entry, in order.
func Messages(entries []JournalEntry) []string {
	var m []string
	for _, e := range entries {
		m = append(m, e["MESSAGE"])
	}
	return m
}

// journal runs journalctl through command, after journalctl --sync as root.
func (b *Box) journal(ctx context.Context, command func(context.Context, string, ...string) *exec.Cmd, args ...string) ([]JournalEntry, error) {
	if out, err := b.Run(ctx, "journalctl", "--sync"); err != nil {
		return nil, fmt.Errorf("journalctl --sync: %w: %s", err, out)
	}
	cmd := command(ctx, "journalctl", append([]string{"--no-pager", "-o", "json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("journalctl %s: %w: %s", strings.Join(args, " "), err, stderr)
	}
	var entries []JournalEntry
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); !strings.HasPrefix(line, "{") {
			continue // blank, or a "-- No entries --" notice
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("read journalctl -o json output: %w: %q", err, line)
		}
		e := make(JournalEntry, len(raw))
		for k, v := range raw {
			e[k] = journalValue(v)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// journalValue decodes one field of journalctl -o json: a string, or an
// array of bytes for a value that is not valid UTF-8.
func journalValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var ints []int
	if json.Unmarshal(v, &ints) == nil {
		b := make([]byte, len(ints))
		for i, n := range ints {
			b[i] = byte(n)
		}
		return string(b)
	}
	return string(v)
}
