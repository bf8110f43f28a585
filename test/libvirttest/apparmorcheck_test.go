package libvirttest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// AppArmorIncludeLine is the line a Debian 12 admin adds to
// /etc/apparmor.d/local/abstractions/libvirt-qemu (docs/libvirt.md, man page).
const AppArmorIncludeLine = "include if exists <abstractions/virtiofsd-shim>"

// AppArmorRule is the rule the project's abstraction gives QEMU.
const AppArmorRule = "/run/virtiofsd/*.sock rw,"

// AppArmorFiles are the files packaging/apparmor ships, by where they are
// installed under /etc/apparmor.d.
func AppArmorFiles() map[string]string {
	return map[string]string{
		"abstractions/virtiofsd-shim":                "virtiofsd-shim",
		"abstractions/libvirt-qemu.d/virtiofsd-shim": "libvirt-qemu.d-virtiofsd-shim",
	}
}

// AppArmorCompiles checks the project's AppArmor files against the libvirt
// profiles of the system tree at root ("/" for this host): installed as the
// package installs them, libvirt's QEMU profile template (what each
// domain's profile is built from) gets the rule, through libvirt's
// libvirt-qemu.d folder where libvirt has one and through the admin's
// documented line where it does not, and it compiles (apparmor_parser -QTK:
// no kernel, no cache). The tree's own apparmor_parser runs chrooted into
// root, in a private mount namespace where a copy of the tree's
// /etc/apparmor.d with the files added is bound over the original: the
// tree is not changed. Without the package's files (purged) it still
// compiles. It returns whether the admin's line was needed.
func AppArmorCompiles(t *testing.T, root string) (adminLine bool) {
	t.Helper()
	etc := filepath.Join(root, "etc", "apparmor.d")
	template := "/etc/apparmor.d/libvirt/TEMPLATE.qemu"
	_, err := os.Stat(filepath.Join(root, template))
	require.NoError(t, err, "libvirt's AppArmor profile template missing in %s (apt-get install libvirt-daemon-system apparmor)", root)

	dir := filepath.Join(t.TempDir(), "apparmor.d")
	out, err := exec.Command("cp", "-a", etc+"/.", dir+"/").CombinedOutput()
	require.NoError(t, err, "copy %s: %s", etc, out)
	for dst, src := range AppArmorFiles() {
		b, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), "packaging", "apparmor", src))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, dst), b, 0o644))
	}
	parser := func(args ...string) (string, string) {
		t.Helper()
		script := `mount --bind "$1" "$2/etc/apparmor.d" && shift 2 && exec chroot "$0" apparmor_parser "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, root, dir, root}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "apparmor_parser %s in %s: %s", strings.Join(args, " "), root, stderr.String())
		return stdout.String(), stderr.String()
	}
	// -p prints the profile with its includes expanded.
	hasRule := func() bool {
		expanded, _ := parser("-p", template)
		return strings.Contains(expanded, AppArmorRule)
	}

	abstraction, err := os.ReadFile(filepath.Join(etc, "abstractions", "libvirt-qemu"))
	require.NoError(t, err)
	if strings.Contains(string(abstraction), "<abstractions/libvirt-qemu.d>") {
		assert.True(t, hasRule(), "libvirt includes abstractions/libvirt-qemu.d: the package's file there must be enough")
	} else {
		assert.False(t, hasRule(), "libvirt has no libvirt-qemu.d folder: the rule comes only with the admin's line")
		local := filepath.Join(dir, "local", "abstractions", "libvirt-qemu")
		require.NoError(t, os.MkdirAll(filepath.Dir(local), 0o755))
		f, err := os.OpenFile(local, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		require.NoError(t, err)
		_, err = f.WriteString(AppArmorIncludeLine + "\n")
		require.NoError(t, err)
		require.NoError(t, f.Close())
		assert.True(t, hasRule(), "with the admin's line in local/abstractions/libvirt-qemu")
		adminLine = true
	}
	// -S writes the compiled policy to stdout: it compiled.
	compiled, stderr := parser("-QTK", "-S", template)
	assert.NotEmpty(t, compiled, "apparmor_parser -QTK -S %s wrote no policy: %s", template, stderr)

	// Purged, the package takes its files away; the admin's line stays and
	// domains' profiles still compile ("include if exists").
	for dst := range AppArmorFiles() {
		require.NoError(t, os.Remove(filepath.Join(dir, dst)))
	}
	assert.False(t, hasRule())
	compiled, stderr = parser("-QTK", "-S", template)
	assert.NotEmpty(t, compiled, "without the package's files: %s", stderr)
	return adminLine
}
