package guest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// requiredModules are the kernel modules the guest needs for virtiofs over
// PCI, in load order. Debian's cloud kernel builds all of them as modules; any
// that a kernel has built in are skipped, and dependencies that modules.dep
// adds are loaded first.
var requiredModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "fuse", "virtiofs",
}

// imageFormat names the layout of the cache entry and the init; change it
// whenever Prepare builds something different from the same inputs.
const imageFormat = "virtiofsd-shim guest image v1"

// Image is a bootable kernel and base initramfs in the cache, built by Prepare.
// It is read-only: Run never changes its files.
type Image struct {
	Kernel        string   // path of the kernel (bzImage)
	Initramfs     string   // path of the base initramfs, an uncompressed newc cpio archive
	KernelRelease string   // the kernel's release, as in /lib/modules/<release>
	Modules       []string // the modules the init loads, in order
	Key           string   // content key of the inputs; names the cache entry
}

// DefaultCacheDir is where Prepare keeps images when given no directory:
// $XDG_CACHE_HOME/virtiofsd-shim/guest when XDG_CACHE_HOME is set, else
// /var/cache/virtiofsd-shim/guest for root, else the user's cache directory.
func DefaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "virtiofsd-shim", "guest")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/virtiofsd-shim/guest"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "virtiofsd-shim", "guest")
	}
	return filepath.Join(os.TempDir(), "virtiofsd-shim-guest")
}

// Prepare returns the guest image for this host's packages, building it into
// cacheDir (DefaultCacheDir when empty) unless an entry with the same content
// key is already there.
//
// The kernel and its modules come from the installed linux-image-*-cloud-amd64
// (the newest under /boot and /lib/modules); the userland is /bin/busybox from
// busybox-static. When either is missing, Prepare does not install anything:
// it runs `apt-get download` and `dpkg-deb -x` into cacheDir/debs (then
// `depmod -b` there, as the kernel package's postinst would), which needs the
// network once and leaves the host's packages alone. Compressed modules
// (.ko.xz, .ko.zst, .ko.gz) are decompressed at build time, since busybox
// insmod loads plain ELF objects only.
//
// The key is a SHA-256 over the kernel, busybox, each module file and the
// generated init, so a kernel or busybox upgrade yields a new entry; old
// entries are never removed. Building took about 20 ms here; a cached entry
// costs hashing the inputs (about 17 MB, 10 ms). Concurrent callers are safe:
// an entry appears in the cache by an atomic rename.
func Prepare(ctx context.Context, cacheDir string) (*Image, error) {
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	return hostSources().prepare(ctx, cacheDir)
}

// sources says where Prepare looks for its inputs.
type sources struct {
	root    string // file system root holding boot/, lib/modules/ and bin/busybox
	kernel  string // package that provides a cloud kernel when root has none
	busybox string // package that provides a static busybox when root has none
}

func hostSources() sources {
	return sources{root: "/", kernel: "linux-image-cloud-amd64", busybox: "busybox-static"}
}

// inputs are the files one image is built from.
type inputs struct {
	release string
	kernel  string
	busybox string
	modules []module
}

type module struct {
	name string
	path string
}

func (s sources) prepare(ctx context.Context, cacheDir string) (*Image, error) {
	in, err := s.find(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range in.modules {
		names = append(names, m.name)
	}
	init := initScript(names)
	key, err := in.key(init)
	if err != nil {
		return nil, err
	}
	img := &Image{
		KernelRelease: in.release,
		Modules:       names,
		Key:           key,
	}
	dir := filepath.Join(cacheDir, key)
	img.Kernel = filepath.Join(dir, "vmlinuz")
	img.Initramfs = filepath.Join(dir, "initramfs.cpio")
	if _, err := os.Stat(img.Initramfs); err == nil {
		return img, nil
	}
	if err := in.build(cacheDir, dir, init); err != nil {
		return nil, err
	}
	return img, nil
}

// find locates the kernel, modules and busybox, downloading the packages into
// cacheDir/debs when the host lacks them.
func (s sources) find(ctx context.Context, cacheDir string) (*inputs, error) {
	in := &inputs{}
	release, err := findCloudKernel(s.root)
	if err != nil {
		root, derr := downloadPackage(ctx, cacheDir, s.kernel)
		if derr != nil {
			return nil, fmt.Errorf("%w; fetching %s instead: %w", err, s.kernel, derr)
		}
		if release, err = findCloudKernel(root); err != nil {
			return nil, fmt.Errorf("%s downloaded into %s: %w", s.kernel, root, err)
		}
		in.kernel, in.release = filepath.Join(root, "boot", "vmlinuz-"+release), release
		if in.modules, err = resolveModules(modulesDir(root, release), requiredModules); err != nil {
			return nil, err
		}
	} else {
		in.kernel, in.release = filepath.Join(s.root, "boot", "vmlinuz-"+release), release
		if in.modules, err = resolveModules(modulesDir(s.root, release), requiredModules); err != nil {
			return nil, err
		}
	}

	in.busybox, err = findStaticBusybox(s.root)
	if err != nil {
		root, derr := downloadPackage(ctx, cacheDir, s.busybox)
		if derr != nil {
			return nil, fmt.Errorf("%w; fetching %s instead: %w", err, s.busybox, derr)
		}
		if in.busybox, err = findStaticBusybox(root); err != nil {
			return nil, fmt.Errorf("%s downloaded into %s: %w", s.busybox, root, err)
		}
	}
	return in, nil
}

// findCloudKernel returns the release of the newest cloud kernel under root
// that has both its image in boot/ and its modules.
func findCloudKernel(root string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*-cloud-amd64"))
	var releases []string
	for _, m := range matches {
		r := strings.TrimPrefix(filepath.Base(m), "vmlinuz-")
		if _, err := os.Stat(filepath.Join(modulesDir(root, r), "modules.dep")); err == nil {
			releases = append(releases, r)
		}
	}
	if len(releases) == 0 {
		return "", fmt.Errorf("no cloud kernel with modules under %s (looked for boot/vmlinuz-*-cloud-amd64; apt-get install linux-image-cloud-amd64)", root)
	}
	sort.Slice(releases, func(i, j int) bool { return versionLess(releases[i], releases[j]) })
	return releases[len(releases)-1], nil
}

func modulesDir(root, release string) string {
	d := filepath.Join(root, "lib", "modules", release)
	if _, err := os.Stat(d); err != nil {
		if u := filepath.Join(root, "usr", "lib", "modules", release); dirExists(u) {
			return u
		}
	}
	return d
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// versionLess compares release strings such as 6.1.0-9-cloud-amd64 and
// 6.1.0-56-cloud-amd64, taking runs of digits as numbers.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		switch {
		case da != "" && db != "":
			na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = ra, rb
		case a[0] != b[0]:
			return a[0] < b[0]
		default:
			a, b = a[1:], b[1:]
		}
	}
	return len(a) < len(b)
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// findStaticBusybox returns the busybox binary under root if it is statically
// linked (the initramfs has no C library).
func findStaticBusybox(root string) (string, error) {
	for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
		path := filepath.Join(root, p)
		f, err := elf.Open(path)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return path, nil
		}
	}
	return "", fmt.Errorf("no statically linked busybox under %s (apt-get install busybox-static)", root)
}

// resolveModules maps module names to files through modules.dep and orders
// them so that every module comes after its dependencies. Built-in modules
// (modules.builtin) are left out.
func resolveModules(dir string, want []string) ([]module, error) {
	deps, err := readModulesDep(dir)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(data)) {
			builtin[moduleName(line)] = true
		}
	}
	var out []module
	seen := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		if builtin[name] {
			return nil
		}
		e, ok := deps[name]
		if !ok {
			return fmt.Errorf("kernel module %s not found in %s/modules.dep (needed by %v)", name, dir, append(chain, name))
		}
		for _, d := range e.deps {
			if err := visit(moduleName(d), append(chain, name)); err != nil {
				return err
			}
		}
		out = append(out, module{name: name, path: filepath.Join(dir, e.path)})
		return nil
	}
	for _, w := range want {
		if err := visit(moduleName(w), nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type depEntry struct {
	path string
	deps []string
}

func readModulesDep(dir string) (map[string]depEntry, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read module dependencies: %w", err)
	}
	defer f.Close()
	out := map[string]depEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		path, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		out[moduleName(path)] = depEntry{path: path, deps: strings.Fields(rest)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return out, nil
}

// moduleName turns kernel/fs/fuse/virtiofs.ko.xz or virtio-pci into the
// canonical module name (virtiofs, virtio_pci).
func moduleName(s string) string {
	s = filepath.Base(s)
	if i := strings.Index(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// readModule returns the module's ELF object, decompressing it if needed.
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		return decompressWith(path, "xz", "xz-utils")
	case strings.HasSuffix(path, ".ko.zst"):
		return decompressWith(path, "zstd", "zstd")
	}
	return nil, fmt.Errorf("kernel module %s: unknown compression", path)
}

func decompressWith(path, tool, pkg string) ([]byte, error) {
	bin, err := exec.LookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %s not found (apt-get install %s)", path, tool, pkg)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s: %w: %s", path, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// key hashes everything the image is built from.
func (in *inputs) key(init string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\ninit %d\n%s\n", imageFormat, len(init), init)
	files := []struct{ name, path string }{{"kernel", in.kernel}, {"busybox", in.busybox}}
	for _, m := range in.modules {
		files = append(files, struct{ name, path string }{"module " + m.name, m.path})
	}
	for _, f := range files {
		sum, err := fileSHA256(f.path)
		if err != nil {
			return "", fmt.Errorf("hash guest image input: %w", err)
		}
		fmt.Fprintf(h, "%s %s %x\n", f.name, filepath.Base(f.path), sum)
	}
	return in.release + "-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// build writes the cache entry dir through a temporary sibling and a rename,
// so that readers see either nothing or a complete entry.
func (in *inputs) build(cacheDir, dir, init string) (err error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("create guest image cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return fmt.Errorf("create guest image cache entry: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("create guest image cache entry: %w", err)
	}
	if err := copyFile(in.kernel, filepath.Join(tmp, "vmlinuz")); err != nil {
		return err
	}
	if err := in.writeInitramfs(filepath.Join(tmp, "initramfs.cpio"), init); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another Prepare finished the same entry first: use that one.
		if _, serr := os.Stat(filepath.Join(dir, "initramfs.cpio")); serr == nil {
			os.RemoveAll(tmp)
			return nil
		}
		return fmt.Errorf("store guest image in cache: %w", err)
	}
	return nil
}

func (in *inputs) writeInitramfs(path, init string) error {
	busybox, err := os.ReadFile(in.busybox)
	if err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	err = writeArchive(path, nil, func(w *cpioWriter) error {
		return in.fillInitramfs(w, busybox, init)
	})
	if err != nil {
		return fmt.Errorf("build initramfs %s: %w", path, err)
	}
	return nil
}

// fillInitramfs adds the base image's entries: folders, the console,
// busybox, init and the kernel modules.
func (in *inputs) fillInitramfs(w *cpioWriter, busybox []byte, init string) error {
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "mnt", "tmp", "run", "root", "etc", "lib", "lib/modules"} {
		w.Dir(d, 0o755)
	}
	w.CharDev("dev/console", 0o600, 5, 1)
	w.File("bin/busybox", 0o755, busybox)
	w.Symlink("bin/sh", "busybox")
	w.File("init", 0o755, []byte(init))
	for _, m := range in.modules {
		data, err := readModule(m.path)
		if err != nil {
			return err
		}
		w.File("lib/modules/"+m.name+".ko", 0o644, data)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy into guest image cache: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("copy into guest image cache: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s into guest image cache: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s into guest image cache: %w", src, err)
	}
	return nil
}

// downloadPackage fetches a Debian package with `apt-get download` (following
// a metapackage to its first dependency, so linux-image-cloud-amd64 yields the
// current linux-image-<release>-cloud-amd64) and unpacks it with dpkg-deb -x
// under cacheDir/debs/<package>. It returns the unpacked root. The host's
// installed packages are not touched.
func downloadPackage(ctx context.Context, cacheDir, pkg string) (string, error) {
	real, err := resolveMetapackage(ctx, pkg)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cacheDir, "debs", real)
	root := filepath.Join(dir, "root")
	if dirExists(root) {
		return root, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("download %s: %w", real, err)
	}
	dl := exec.CommandContext(ctx, "apt-get", "download", real)
	dl.Dir = dir
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", real, err, strings.TrimSpace(string(out)))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, real+"_*.deb"))
	if len(debs) == 0 {
		return "", fmt.Errorf("apt-get download %s left no .deb in %s", real, dir)
	}
	tmp, err := os.MkdirTemp(dir, ".root-")
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", real, err)
	}
	x := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], tmp)
	if out, err := x.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[0], err, strings.TrimSpace(string(out)))
	}
	if err := depmodAll(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack %s: %w", real, err)
	}
	if err := os.Rename(tmp, root); err != nil && !dirExists(root) {
		return "", fmt.Errorf("unpack %s: %w", real, err)
	}
	os.RemoveAll(tmp)
	return root, nil
}

// depmodAll writes modules.dep for every kernel unpacked under root: a
// kernel package ships no modules.dep, its postinst runs depmod.
func depmodAll(ctx context.Context, root string) error {
	dirs, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "modules.dep")); err == nil {
			continue
		}
		release := filepath.Base(d)
		out, err := exec.CommandContext(ctx, "depmod", "-b", root, release).CombinedOutput()
		if err != nil {
			return fmt.Errorf("depmod -b %s %s: %w: %s (apt-get install kmod)", root, release, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// resolveMetapackage returns pkg itself when it ships files, or else the
// linux-image / busybox package it depends on.
func resolveMetapackage(ctx context.Context, pkg string) (string, error) {
	if !strings.HasPrefix(pkg, "linux-image-") {
		return pkg, nil
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--important", pkg).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("apt-cache depends %s: %w: %s (run apt-get update?)", pkg, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("apt-cache depends %s: %w", pkg, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") && !strings.HasPrefix(dep, "<") {
			return dep, nil
		}
	}
	return pkg, nil
}

// initScript is the guest's /init: it loads the modules, mounts the kernel
// file systems, runs /script and powers off. Its markers are what Run parses.
func initScript(modules []string) string {
	return `#!/bin/sh
# /init of the virtiofsd-shim test guest, written by package guest.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
	echo "` + markerError + ` $*"
	poweroff -f
}
for m in ` + strings.Join(modules, " ") + `; do
	insmod /lib/modules/$m.ko || fail "insmod $m failed"
done
[ -r /script ] || fail "no /script in the initramfs"
# An empty line first: the firmware leaves escape codes without a newline.
echo
echo ` + markerStart + `
sh /script </dev/null
echo "` + markerExit + `$?"
# A share whose virtiofsd died never answers, and requests to it wait
# uninterruptibly: sync gets 5 s, then the guest powers off regardless.
sync & s=$!
i=0
while kill -0 $s 2>/dev/null; do
	[ $i -ge 50 ] && echo "sync still running after 5s, powering off" && break
	sleep 0.1
	i=$((i+1))
done
# -n: no second, unbounded sync of poweroff's own.
poweroff -n -f
`
}
