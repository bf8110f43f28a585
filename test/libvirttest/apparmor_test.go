package libvirttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// Debian 12's libvirt 9.0 has no libvirt-qemu.d folder: the admin's line.
func TestAppArmorCompilesDebian12(t *testing.T) {
	sdbox.RequireRoot(t)
	assert.True(t, AppArmorCompiles(t, "/"), "libvirt 9.0 needs the admin's line")
}

// Debian 13's libvirt 11 includes abstractions/libvirt-qemu.d: nothing to do.
func TestAppArmorCompilesDebian13(t *testing.T) {
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tree, err := distro.Debian13(ctx)
	require.NoError(t, err, "build the Debian 13 tree")
	assert.False(t, AppArmorCompiles(t, tree.Root), "libvirt 11 includes the package's libvirt-qemu.d file")
}

// docs/libvirt.md and the man page give the admin the exact line and rule.
func TestDocsGiveTheAppArmorLine(t *testing.T) {
	for _, doc := range []string{"docs/libvirt.md", "packaging/virtiofsd-shim.8"} {
		b, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), doc))
		require.NoError(t, err)
		text := strings.ReplaceAll(string(b), `\-`, "-") // roff's hyphen
		assert.Contains(t, text, AppArmorIncludeLine, doc)
		assert.Contains(t, text, "abstractions/libvirt-qemu.d/virtiofsd-shim", doc)
		assert.Contains(t, text, "check --libvirt", doc)
	}
}
