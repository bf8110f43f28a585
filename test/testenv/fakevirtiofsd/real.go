package fakevirtiofsd

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
)

// Real is the real virtiofsd of a flavor, the binary the fake stands in
// for: the C one of this Debian 12 host, the Rust one of the Debian 13 tree
// through that tree's loader (built on first use, which needs root). A
// missing one fails the test, saying what to install.
func Real(t testing.TB, fl virtiofsd.Flavor) string {
	t.Helper()
	if fl == virtiofsd.C {
		if _, err := os.Stat(virtiofsd.CVirtiofsd); err != nil {
			t.Fatalf("the real C virtiofsd is missing (%v): apt-get install qemu-system-common (make test does)", err)
		}
		return virtiofsd.CVirtiofsd
	}
	tree, err := distro.Debian13(context.Background())
	require.NoError(t, err, "the Debian 13 tree that brings the Rust virtiofsd")
	bin, err := tree.RustVirtiofsd()
	require.NoError(t, err)
	return bin
}
