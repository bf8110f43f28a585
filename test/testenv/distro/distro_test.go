package distro_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
)

// TestDebian13TreeRunsTheRustVirtiofsdOnThisHost builds (or reuses) the
// Debian 13 tree and runs its Rust virtiofsd through the tree's loader.
func TestDebian13TreeRunsTheRustVirtiofsdOnThisHost(t *testing.T) {
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tree, err := distro.Debian13(ctx)
	require.NoError(t, err)
	bin, err := tree.RustVirtiofsd()
	require.NoError(t, err)
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, strings.HasPrefix(string(out), "virtiofsd 1."), "want the Rust virtiofsd's version line, got %q", out)
	_, err = tree.Deb("virtiofsd")
	require.NoError(t, err)
	require.NoFileExists(t, tree.Root+"/usr/libexec/virtiofsd", "virtiofsd must arrive through the project's .deb, not the tree")
}

// TestDebian13TreeRunsItsQEMUOnThisHost runs the tree's QEMU 10 through the
// tree's loader, as the guest tests of the Debian 13 leg do.
func TestDebian13TreeRunsItsQEMUOnThisHost(t *testing.T) {
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tree, err := distro.Debian13(ctx)
	require.NoError(t, err)
	bin, err := tree.QEMU()
	require.NoError(t, err)
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, strings.HasPrefix(string(out), "QEMU emulator version 10."), "want QEMU 10's version line, got %q", out)
}
