package shimbox

import (
	"context"
	"fmt"
	"testing"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// Platform names a leg of the tests: a distribution with its systemd, QEMU
// and virtiofsd. The zero value is Debian12.
type Platform string

const (
	// Debian12 is this machine's own root: systemd 252, QEMU 7.2 and the C
	// virtiofsd of qemu-system-common. The shim and its units are the tree's
	// build, bind-mounted into the box (fast; the package tests install the
	// .deb here too).
	Debian12 Platform = "debian12"
	// Debian13 is the tree of package distro: systemd 257, QEMU 10 and the
	// Rust virtiofsd 1.13. The shim goes in from its own .deb through apt
	// inside the box, so the package's dependencies are what bring
	// virtiofsd.
	Debian13 Platform = "debian13"
)

// Platforms lists the legs, in the order tests run them.
func Platforms() []Platform { return []Platform{Debian12, Debian13} }

// String is the leg's name, also its subtest name: "debian12", "debian13".
func (p Platform) String() string {
	if p == "" {
		return string(Debian12)
	}
	return string(p)
}

// Distribution is the leg's distribution as people name it.
func (p Platform) Distribution() string {
	switch p.String() {
	case string(Debian13):
		return "Debian 13"
	default:
		return "Debian 12"
	}
}

// Virtiofsd is where the leg's virtiofsd is installed, inside a box.
func (p Platform) Virtiofsd() string {
	if p.String() == string(Debian13) {
		return virtiofsd.RustVirtiofsd
	}
	return virtiofsd.CVirtiofsd
}

// Rust says whether the leg's virtiofsd is the Rust one (else the C one of
// QEMU), for expectations that differ by flavor.
func (p Platform) Rust() bool { return p.String() == string(Debian13) }

// Flavor is the leg's virtiofsd flavor as the FLAVOR= config key names it:
// "c" or "rust".
func (p Platform) Flavor() string {
	if p.Rust() {
		return "rust"
	}
	return "c"
}

// ReadyLine and ConnectedLine are the journal MESSAGEs of the leg's
// virtiofsd when it waits for its VM and when the VM connected (the shim
// strips the Rust one's timestamp and level).
func (p Platform) ReadyLine() string {
	if p.Rust() {
		return "Waiting for vhost-user socket connection..."
	}
	return "virtio_session_mount: Waiting for vhost-user socket connection..."
}

// ConnectedLine: see ReadyLine.
func (p Platform) ConnectedLine() string {
	if p.Rust() {
		return "Client connected, servicing requests"
	}
	return "virtio_session_mount: Received vhost-user socket connection"
}

// SharedDirArg is the argument by which the shim gives the leg's virtiofsd
// its shared directory (one argv element).
func (p Platform) SharedDirArg(dir string) string {
	if p.Rust() {
		return "--shared-dir=" + dir
	}
	return "source=" + dir
}

// UnitDir is where the project's units are inside the leg's box: written
// into /run/systemd/system on Debian 12, installed by the package on Debian
// 13.
func (p Platform) UnitDir() string {
	if p.Rust() {
		return "/usr/lib/systemd/system"
	}
	return "/run/systemd/system"
}

// Tree returns the leg's distribution tree, building it the first time on
// a machine (about a minute), or nil for the leg that is this machine's
// own root.
func (p Platform) Tree(ctx context.Context) (*distro.Tree, error) {
	if p.String() != string(Debian13) {
		return nil, nil
	}
	t, err := distro.Debian13(ctx)
	if err != nil {
		return nil, fmt.Errorf("the %s leg: %w", p, err)
	}
	return t, nil
}

// QEMU is the qemu-system-x86_64 the leg's guests run under, for
// guest.Spec.QEMU: "" (the host's, from PATH) on Debian 12, the Debian 13
// tree's QEMU 10 run on this host through the tree's loader on Debian 13.
func (p Platform) QEMU(ctx context.Context) (string, error) {
	tree, err := p.Tree(ctx)
	if err != nil || tree == nil {
		return "", err
	}
	return tree.QEMU()
}

// Legs runs f once per platform leg, as subtests named after the legs
// (debian12, debian13), one after the other.
func Legs(t *testing.T, f func(t *testing.T, leg Platform)) {
	t.Helper()
	for _, leg := range Platforms() {
		t.Run(leg.String(), func(t *testing.T) { f(t, leg) })
	}
}
