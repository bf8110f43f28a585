// Package distro builds and caches the Debian release trees that the tests'
// platform legs boot, so that one machine can test on Debian 12 (its own
// root) and on Debian 13 (a tree built from Debian's packages).
//
// A tree is built once with mmdebstrap into /var/cache/virtiofsd-shim/ and
// reused until its recipe changes; concurrent test processes wait for one
// build (a lock file) instead of building twice. Building needs root and
// Debian's package registry.
package distro

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CacheDir holds the trees, one folder per recipe.
const CacheDir = "/var/cache/virtiofsd-shim"

// Recipe says how a tree is built.
type Recipe struct {
	// Name is the folder prefix and the platform's name, e.g. "debian13".
	Name string
	// Suite is the Debian suite mmdebstrap builds, e.g. "trixie".
	Suite string
	// Include are the packages installed in the tree (mmdebstrap --include),
	// on top of the minbase variant.
	Include []string
	// Download are packages fetched into the tree's apt cache but not
	// installed, with the package lists kept, so that `apt-get install
	// ./x.deb` inside the tree resolves them without the network. Each is
	// also unpacked beside the tree (Tree.Unpacked), for running its
	// programs on the host.
	Download []string
}

// Debian13Recipe is the Debian 13 leg: systemd 257, QEMU 10, libvirt and
// what the rootless tests need, with the Rust virtiofsd downloaded but not
// installed: the project's .deb must bring it through its dependencies.
var Debian13Recipe = Recipe{
	Name:  "debian13",
	Suite: "trixie",
	Include: []string{
		"systemd", "systemd-sysv", "dbus", "procps", "iproute2",
		"qemu-system-x86",
		"libvirt-daemon-system", "libvirt-clients", "libvirt-daemon-driver-qemu",
		"apparmor", "uidmap",
		// The Rust virtiofsd's libraries, so that Tree.RustVirtiofsd runs it
		// through the tree's loader.
		"libcap-ng0", "libseccomp2", "libgcc-s1",
	},
	Download: []string{"virtiofsd"},
}

// Tree is a built tree.
type Tree struct {
	Recipe Recipe
	// Dir is the tree's cache folder; Root is the tree itself (Dir/root).
	Dir, Root string
}

// Debian13 returns the Debian 13 tree, building it first when it is missing
// or its recipe changed (about a minute).
func Debian13(ctx context.Context) (*Tree, error) { return Build(ctx, Debian13Recipe) }

// recipeVersion changes whenever Build's way of building changes, so that
// trees built the old way are rebuilt.
const recipeVersion = "1"

// key identifies a recipe's build.
func (r Recipe) key() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", recipeVersion, r.Name, r.Suite,
		strings.Join(r.Include, ","), strings.Join(r.Download, ","))
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// Build returns the tree of a recipe, building it when it is not cached.
// Each call marks the tree as used (the mtime of its "complete" file).
// Other trees of the same recipe name (older versions, or another checkout's
// recipe) are removed once a day has passed since their last use, never
// while a test process on this machine may still boot them.
func Build(ctx context.Context, r Recipe) (*Tree, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("build a Debian tree: needs root (mmdebstrap in root mode)")
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("build %s tree: %w", r.Name, err)
	}
	dir := filepath.Join(CacheDir, r.Name+"-"+r.key())
	t := &Tree{Recipe: r, Dir: dir, Root: filepath.Join(dir, "root")}

	lock, err := os.OpenFile(filepath.Join(CacheDir, r.Name+".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build %s tree: %w", r.Name, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("build %s tree: lock: %w", r.Name, err)
	}
	defer func() { _ = unix.Flock(int(lock.Fd()), unix.LOCK_UN) }()

	complete := filepath.Join(dir, "complete")
	if _, err := os.Stat(complete); err != nil {
		if err := t.build(ctx); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	_ = os.Chtimes(complete, now, now)
	old, _ := filepath.Glob(filepath.Join(CacheDir, r.Name+"-*"))
	for _, o := range old {
		fi, err := os.Stat(filepath.Join(o, "complete"))
		if o != dir && (err != nil || now.Sub(fi.ModTime()) > unusedFor) {
			_ = os.RemoveAll(o)
		}
	}
	return t, nil
}

// unusedFor is how long a tree other than the one asked for stays cached
// after its last use: checkouts with other recipes may be testing beside
// this one, their boxes booted from their tree.
const unusedFor = 24 * time.Hour

func (t *Tree) build(ctx context.Context) error {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("build %s tree: mmdebstrap not found: apt-get install mmdebstrap (scripts/deps.sh does)", t.Recipe.Name)
	}
	tmp := t.Dir + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("build %s tree: %w", t.Recipe.Name, err)
	}
	root := filepath.Join(tmp, "root")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("build %s tree: %w", t.Recipe.Name, err)
	}
	args := []string{"--variant=minbase", "--mode=root",
		"--include=" + strings.Join(t.Recipe.Include, ",")}
	if len(t.Recipe.Download) > 0 {
		args = append(args, "--skip=cleanup/apt/lists,cleanup/apt/cache",
			`--customize-hook=chroot "$1" apt-get install --download-only --yes `+strings.Join(t.Recipe.Download, " "))
	}
	args = append(args, t.Recipe.Suite, root)
	if out, err := exec.CommandContext(ctx, "mmdebstrap", args...).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("build %s tree: mmdebstrap %s: %w\n%s", t.Recipe.Name, strings.Join(args, " "), err, tail(out))
	}
	for _, pkg := range t.Recipe.Download {
		debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives", pkg+"_*.deb"))
		if len(debs) != 1 {
			os.RemoveAll(tmp)
			return fmt.Errorf("build %s tree: want one downloaded %s package, found %v", t.Recipe.Name, pkg, debs)
		}
		dest := filepath.Join(tmp, "unpacked", pkg)
		if err := os.MkdirAll(dest, 0o755); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("build %s tree: %w", t.Recipe.Name, err)
		}
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], dest).CombinedOutput(); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("build %s tree: unpack %s: %w\n%s", t.Recipe.Name, debs[0], err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(t.Recipe.key()+"\n"), 0o644); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("build %s tree: %w", t.Recipe.Name, err)
	}
	if err := os.Rename(tmp, t.Dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("build %s tree: %w", t.Recipe.Name, err)
	}
	return nil
}

// Unpacked is where a Recipe.Download package was unpacked, beside the tree.
func (t *Tree) Unpacked(pkg string) string { return filepath.Join(t.Dir, "unpacked", pkg) }

// Deb is the downloaded .deb of a Recipe.Download package, in the tree.
func (t *Tree) Deb(pkg string) (string, error) {
	debs, _ := filepath.Glob(filepath.Join(t.Root, "var/cache/apt/archives", pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("%s tree: want one downloaded %s package, found %v", t.Recipe.Name, pkg, debs)
	}
	return debs[0], nil
}

// RustVirtiofsd returns a program that runs the tree's Rust virtiofsd on this
// host through the tree's own loader and libraries (it needs a newer glibc
// than Debian 12's). It takes virtiofsd's arguments, --version included, so
// it can stand wherever a virtiofsd binary is named (VIRTIOFSD=, say). The
// wrapper lives in the tree's cache folder, which a private systemd on this
// host sees.
func (t *Tree) RustVirtiofsd() (string, error) {
	bin := filepath.Join(t.Unpacked("virtiofsd"), "usr/libexec/virtiofsd")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s tree: the Rust virtiofsd: %w", t.Recipe.Name, err)
	}
	return t.wrapper("virtiofsd-rust", "The Rust virtiofsd", "", bin, "")
}

// QEMU returns a program that runs the tree's qemu-system-x86_64 on this
// host through the tree's loader and libraries, with the tree's firmware and
// modules; it takes QEMU's arguments (guest.Spec.QEMU).
func (t *Tree) QEMU() (string, error) {
	bin := filepath.Join(t.Root, "usr/bin/qemu-system-x86_64")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s tree: QEMU: %w (the recipe includes qemu-system-x86)", t.Recipe.Name, err)
	}
	return t.wrapper("qemu-system-x86_64", "QEMU",
		"QEMU_MODULE_DIR="+shq(filepath.Join(t.Root, "usr/lib/x86_64-linux-gnu/qemu"))+" ", bin,
		" -L "+shq(filepath.Join(t.Root, "usr/share/qemu"))+" -L "+shq(filepath.Join(t.Root, "usr/share/seabios")))
}

// wrapper writes (once) a script in the tree's folder that runs bin through
// the tree's loader, with env before it and args after it.
func (t *Tree) wrapper(name, what, env, bin, args string) (string, error) {
	wrapper := filepath.Join(t.Dir, name)
	script := fmt.Sprintf("#!/bin/sh\n# %s of %s, run through that tree's loader.\n%sexec %s --library-path %s %s%s \"$@\"\n",
		what, t.Recipe.Name, env, shq(filepath.Join(t.Root, "usr/lib64/ld-linux-x86-64.so.2")),
		shq(filepath.Join(t.Root, "usr/lib/x86_64-linux-gnu")), shq(bin), args)
	if b, err := os.ReadFile(wrapper); err == nil && string(b) == script {
		return wrapper, nil
	}
	tmp := fmt.Sprintf("%s.tmp%d", wrapper, os.Getpid())
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("%s tree: write %s: %w", t.Recipe.Name, wrapper, err)
	}
	if err := os.Rename(tmp, wrapper); err != nil {
		return "", fmt.Errorf("%s tree: write %s: %w", t.Recipe.Name, wrapper, err)
	}
	return wrapper, nil
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func tail(b []byte) string {
	const n = 4 << 10
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
