package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRoot lays out boot/, lib/modules/ and bin/busybox the way Debian's
// packages do, with modules compressed in each supported format.
func fakeRoot(t *testing.T, release string) (root string, modules map[string][]byte) {
	t.Helper()
	busybox := "/bin/busybox"
	f, err := elf.Open(busybox)
	if err != nil {
		t.Skipf("needs a static busybox at %s (apt-get install busybox-static): %v", busybox, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Skipf("%s is dynamically linked; install busybox-static", busybox)
		}
	}
	f.Close()

	root = t.TempDir()
	mod := filepath.Join(root, "lib/modules", release)
	for _, d := range []string{"boot", "bin", "lib/modules/" + release + "/kernel/drivers/virtio", "lib/modules/" + release + "/kernel/fs/fuse"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+release), []byte("kernel "+release), 0o600))
	data, err := os.ReadFile(busybox)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755))

	// How each module is stored: plain, gzip always; xz and zstd when their
	// tools are installed (Prepare shells out to them).
	compress := map[string]string{
		"virtio_ring": "", "virtio": ".gz", "virtio_pci_modern_dev": "",
		"virtio_pci_legacy_dev": "", "virtio_pci": ".gz", "fuse": ".gz", "virtiofs": ".gz",
	}
	if _, err := exec.LookPath("xz"); err == nil {
		compress["virtiofs"] = ".xz"
	}
	if _, err := exec.LookPath("zstd"); err == nil {
		compress["fuse"] = ".zst"
	}
	dir := map[string]string{"fuse": "kernel/fs/fuse", "virtiofs": "kernel/fs/fuse"}
	modules = map[string][]byte{}
	paths := map[string]string{}
	for name, ext := range compress {
		d := "kernel/drivers/virtio"
		if dd, ok := dir[name]; ok {
			d = dd
		}
		rel := d + "/" + strings.ReplaceAll(name, "_", "-") + ".ko" + ext
		if name == "virtio_pci" || name == "virtiofs" || name == "fuse" {
			rel = d + "/" + name + ".ko" + ext
		}
		paths[name] = rel
		modules[name] = []byte("\x7fELF module " + name)
		writeCompressed(t, filepath.Join(mod, rel), ext, modules[name])
	}
	// Listed in an order unlike the load order, as depmod does.
	dep := strings.Join([]string{
		paths["virtiofs"] + ": " + paths["virtio"] + " " + paths["virtio_ring"] + " " + paths["fuse"],
		paths["fuse"] + ":",
		paths["virtio_pci"] + ": " + paths["virtio_pci_legacy_dev"] + " " + paths["virtio_pci_modern_dev"] + " " + paths["virtio"] + " " + paths["virtio_ring"],
		paths["virtio"] + ": " + paths["virtio_ring"],
		paths["virtio_ring"] + ":",
		paths["virtio_pci_modern_dev"] + ":",
		paths["virtio_pci_legacy_dev"] + ":",
	}, "\n") + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(mod, "modules.dep"), []byte(dep), 0o644))
	return root, modules
}

func writeCompressed(t *testing.T, path, ext string, data []byte) {
	t.Helper()
	var out []byte
	switch ext {
	case "":
		out = data
	case ".gz":
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, err := zw.Write(data)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
		out = buf.Bytes()
	case ".xz", ".zst":
		tool := map[string]string{".xz": "xz", ".zst": "zstd"}[ext]
		cmd := exec.Command(tool, "-c")
		cmd.Stdin = bytes.NewReader(data)
		var err error
		out, err = cmd.Output()
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(path, out, 0o644))
}

func unpackCPIO(t *testing.T, archive string) string {
	t.Helper()
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio(1) not installed (apt-get install cpio): cannot look inside the initramfs")
	}
	dir := t.TempDir()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	cmd := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "dev/console") { // mknod needs root
		require.NoError(t, err, "%s", out)
	}
	return dir
}

func TestPrepareBuildsInitramfsWithDecompressedModulesInLoadOrder(t *testing.T) {
	const release = "6.1.0-99-cloud-amd64"
	root, modules := fakeRoot(t, release)
	cache := t.TempDir()
	src := sources{root: root}

	img, err := src.prepare(context.Background(), cache)
	require.NoError(t, err)

	assert.Equal(t, release, img.KernelRelease)
	assert.Equal(t, requiredModules, img.Modules)
	assert.True(t, strings.HasPrefix(img.Key, release+"-"), img.Key)
	assert.Equal(t, filepath.Join(cache, img.Key, "vmlinuz"), img.Kernel)
	kernel, err := os.ReadFile(img.Kernel)
	require.NoError(t, err)
	assert.Equal(t, "kernel "+release, string(kernel))

	dir := unpackCPIO(t, img.Initramfs)
	for name, want := range modules {
		got, err := os.ReadFile(filepath.Join(dir, "lib/modules", name+".ko"))
		require.NoError(t, err, name)
		assert.Equal(t, string(want), string(got), "module %s is stored decompressed", name)
	}
	init, err := os.ReadFile(filepath.Join(dir, "init"))
	require.NoError(t, err)
	assert.Contains(t, string(init), "for m in "+strings.Join(requiredModules, " ")+"; do")
	target, err := os.Readlink(filepath.Join(dir, "bin/sh"))
	require.NoError(t, err)
	assert.Equal(t, "busybox", target)
}

func TestPrepareReusesCacheUntilAnInputChanges(t *testing.T) {
	const release = "6.1.0-99-cloud-amd64"
	root, _ := fakeRoot(t, release)
	cache := t.TempDir()
	src := sources{root: root}

	first, err := src.prepare(context.Background(), cache)
	require.NoError(t, err)
	// Mark the entry: a rebuild would replace the file.
	require.NoError(t, os.WriteFile(first.Initramfs, []byte("cached"), 0o644))

	again, err := src.prepare(context.Background(), cache)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	data, err := os.ReadFile(again.Initramfs)
	require.NoError(t, err)
	assert.Equal(t, "cached", string(data), "a warm Prepare must not rebuild")

	require.NoError(t, os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+release), []byte("upgraded kernel"), 0o600))
	upgraded, err := src.prepare(context.Background(), cache)
	require.NoError(t, err)
	assert.NotEqual(t, first.Key, upgraded.Key)
	entries, err := os.ReadDir(cache)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "one entry per key, no leftovers of the build")
}

func TestPreparePicksNewestCloudKernel(t *testing.T) {
	root, _ := fakeRoot(t, "6.1.0-9-cloud-amd64")
	newer, _ := fakeRoot(t, "6.1.0-56-cloud-amd64")
	require.NoError(t, os.Rename(filepath.Join(newer, "boot/vmlinuz-6.1.0-56-cloud-amd64"), filepath.Join(root, "boot/vmlinuz-6.1.0-56-cloud-amd64")))
	require.NoError(t, os.Rename(filepath.Join(newer, "lib/modules/6.1.0-56-cloud-amd64"), filepath.Join(root, "lib/modules/6.1.0-56-cloud-amd64")))
	// A kernel image without modules does not count.
	require.NoError(t, os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.1.0-77-cloud-amd64"), nil, 0o600))

	release, err := findCloudKernel(root)
	require.NoError(t, err)
	assert.Equal(t, "6.1.0-56-cloud-amd64", release)
}

func TestResolveModulesSkipsBuiltinsAndReportsMissing(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko\nkernel/fs/fuse/fuse.ko:\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio.ko\n"), 0o644))

	mods, err := resolveModules(dir, []string{"virtiofs"})
	require.NoError(t, err)
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	assert.Equal(t, []string{"fuse", "virtiofs"}, names)

	_, err = resolveModules(dir, []string{"virtio_pci"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kernel module virtio_pci not found")
}

func TestVersionLess(t *testing.T) {
	assert.True(t, versionLess("6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64"))
	assert.False(t, versionLess("6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64"))
	assert.True(t, versionLess("5.10.0-30-cloud-amd64", "6.1.0-1-cloud-amd64"))
	assert.False(t, versionLess("6.1.0-1-cloud-amd64", "6.1.0-1-cloud-amd64"))
}
