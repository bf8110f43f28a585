package pkgtest_test

import (
	"context"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

const pkgName = "virtiofsd-shim"

// machine is a private systemd that plays the user's machine of a leg. On
// Debian 12 it is this machine's root with /usr, /etc and the dpkg database
// on overlays of the box: dpkg run inside installs for real and its
// maintainer scripts reach a systemd that runs, but every file it writes
// stays in the box, so a virtiofsd-shim installed on this machine, and its
// running instances, are left alone. On Debian 13 it is the Debian 13 tree (with QEMU, without
// virtiofsd), whose overlay keeps everything apt and dpkg write; it sees
// this machine's /var/tmp, where the packages are.
type machine struct {
	*sdbox.Box
	t   *testing.T
	leg shimbox.Platform
}

func newMachine(t *testing.T, leg shimbox.Platform) machine {
	t.Helper()
	sdbox.RequireRoot(t)
	o := sdbox.Options{Name: "pkgtest", Overlay: []string{"/usr", "/var/lib/dpkg"}}
	tree, err := leg.Tree(t.Context())
	require.NoError(t, err)
	if tree != nil {
		o.Overlay = nil // the whole tree is the box's overlay
		o.Root = tree.Root
		o.Binds = map[string]string{"/var/tmp": "/var/tmp"}
	}
	return machine{Box: sdbox.New(t, o), t: t, leg: leg}
}

// install installs a .deb as a user of the leg does: dpkg -i on Debian 12
// (this machine has the C virtiofsd), apt-get install ./x.deb on Debian 13,
// where apt must bring virtiofsd from the package's dependencies.
func (m machine) install(ctx context.Context, deb string) string {
	m.t.Helper()
	if m.leg == shimbox.Debian13 {
		return m.sh(ctx, "apt-get install --yes --no-install-recommends "+deb)
	}
	return m.sh(ctx, "dpkg -i "+deb)
}

// status is dpkg's status of a package in the box ("" when dpkg does not
// know it).
func (m machine) status(ctx context.Context, pkg string) string {
	m.t.Helper()
	return m.sh(ctx, "dpkg-query -W -f '${Status}' "+pkg+" 2>/dev/null || true")
}

// sh runs a command line in the box, with a root PATH, and fails the test
// if it fails.
func (m machine) sh(ctx context.Context, script string) string {
	m.t.Helper()
	out, err := m.Run(ctx, "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "sh", "-c", script)
	require.NoError(m.t, err)
	return strings.TrimSpace(out)
}

// Systemctl runs systemctl in the box, which makes the machine a
// unitprop.Manager.
func (m machine) Systemctl(ctx context.Context, args ...string) (string, error) {
	return m.Run(ctx, "systemctl", args...)
}

// show returns one property of a unit in the box.
func (m machine) show(ctx context.Context, unit, prop string) string {
	m.t.Helper()
	v, err := unitprop.Property(ctx, m, unit, prop)
	require.NoError(m.t, err)
	return v
}

// waitFor polls a unit property until it has the value.
func (m machine) waitFor(ctx context.Context, unit, prop, value string) {
	m.t.Helper()
	require.Eventually(m.t, func() bool {
		v, err := unitprop.Property(ctx, m, unit, prop)
		return err == nil && v == value
	}, 15*time.Second, 50*time.Millisecond, "%s %s=%s", unit, prop, value)
}

// exeVersion runs `version` of the very executable a process runs, even if
// its file has been replaced since.
func (m machine) exeVersion(ctx context.Context, pid string) string {
	m.t.Helper()
	return m.sh(ctx, "/proc/"+pid+"/exe version")
}

// TestInstallUpgradeRemovePurge installs the .deb as a user of each leg
// does, runs the system tests against the installed files, upgrades it
// under a running session, removes it with an instance running and purges
// it. On Debian 13 the machine has QEMU and no virtiofsd: the package's
// dependencies must bring virtiofsd, and the first session must be served.
func TestInstallUpgradeRemovePurge(t *testing.T) {
	shimbox.Legs(t, installUpgradeRemovePurge)
}

func installUpgradeRemovePurge(t *testing.T, leg shimbox.Platform) {
	sdbox.RequireRoot(t)
	needTools(t, "dpkg", "dpkg-deb")
	ctx := context.Background()
	old := packages(t)
	newer := nextBuild(t) // a later build of the same tree

	m := newMachine(t, leg)
	if st := m.status(ctx, pkgName); strings.Contains(st, " installed") {
		// This machine has the product installed (the box sees its dpkg
		// database): it goes, inside the box only.
		t.Logf("%s is installed on this machine (%s): purging it inside the box, the machine keeps it", pkgName, st)
		m.sh(ctx, "dpkg --purge "+pkgName)
	}
	if leg == shimbox.Debian13 {
		assert.Equal(t, "install ok installed", m.status(ctx, "qemu-system-x86"), "the machine runs QEMU")
		assert.NotContains(t, m.status(ctx, "virtiofsd"), " installed", "the machine has no virtiofsd yet")
	}

	// Install: the files are there, systemd knows the units, and no
	// instance is enabled or started.
	t.Log(m.install(ctx, old.Deb))
	if leg == shimbox.Debian13 {
		assert.Equal(t, "install ok installed", m.status(ctx, "virtiofsd"), "apt brought virtiofsd as a dependency")
	}
	m.sh(ctx, "test -x "+leg.Virtiofsd())
	files := strings.Split(m.sh(ctx, "dpkg -L "+pkgName), "\n")
	require.Contains(t, files, "/usr/libexec/virtiofsd-shim")
	assert.Equal(t, pkgName+" "+old.Version, m.sh(ctx, "/usr/libexec/virtiofsd-shim version"))
	assert.Regexp(t, `^(/usr)?/lib/systemd/system/virtiofsd@\.service$`, m.show(ctx, "virtiofsd@vm1.service", "FragmentPath"))
	assert.Equal(t, "inactive", m.show(ctx, "virtiofsd@vm1.socket", "ActiveState"))
	assert.Empty(t, m.sh(ctx, "systemctl list-units --all --plain --no-legend 'virtiofsd@*'"), "nothing started")
	assert.Empty(t, m.sh(ctx, "ls /etc/systemd/system/*.wants 2>/dev/null | grep virtiofsd || true"), "nothing enabled")
	assert.Equal(t, "/etc/virtiofsd/example.conf.sample", m.sh(ctx, "ls /etc/virtiofsd/*"))
	if _, err := m.Run(ctx, "sh", "-c", "command -v man"); err == nil {
		assert.Contains(t, m.sh(ctx, "man -w virtiofsd-shim"), "/usr/share/man/man8/virtiofsd-shim.8.gz")
	} else { // Debian 13's minbase tree has no man
		m.sh(ctx, "test -f /usr/share/man/man8/virtiofsd-shim.8.gz")
	}

	t.Run("SystemTestsAgainstTheInstalledFiles", func(t *testing.T) {
		if leg != shimbox.Debian12 {
			t.Skipf("%s: the system tests' %s leg runs against this very .deb, installed by apt in its box", leg, leg)
		}
		pkgs := []string{"./test/testenv/shimbox/"}
		if _, err := os.Stat(filepath.Join(testdir.RepoRoot(), "internal", "systemtest")); err == nil {
			pkgs = append(pkgs, "./test/systemtest/")
		}
		// The files the package installed, copied out of the box (its
		// /usr is its own), for the Debian 12 leg of each package.
		dir := filepath.Join(workDir, "installed-"+leg.String())
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for _, f := range []string{"/usr/libexec/virtiofsd-shim", "/usr/lib/systemd/system/virtiofsd@.socket", "/usr/lib/systemd/system/virtiofsd@.service"} {
			b, err := os.ReadFile(m.Path(f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o755))
		}
		cmd := exec.Command("go", append([]string{"test", "-count=1", "-run", "/" + string(shimbox.Debian12)}, pkgs...)...)
		cmd.Dir = testdir.RepoRoot()
		cmd.Env = append(os.Environ(), "VIRTIOFSD_SHIM_BINARY="+filepath.Join(dir, "virtiofsd-shim"),
			"VIRTIOFSD_SHIM_UNITS="+dir)
		out, err := cmd.CombinedOutput()
		t.Logf("go test %s with the installed binary and units:\n%s", strings.Join(pkgs, " "), out)
		require.NoError(t, err)
	})

	// An instance configured from the example, every key enabled, with a VM
	// session open.
	share, err := os.MkdirTemp("/var/tmp", "pkgtest-share-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(share) })
	conf := m.sh(ctx, `sed -e 's|^SHARED_DIR=.*|SHARED_DIR=`+share+`|' /etc/virtiofsd/example.conf.sample`)
	if !leg.Rust() {
		// The example's VIRTIOFSD= and EXTRA_ARGS= name the C virtiofsd:
		// on the Rust leg the instance keeps the defaults.
		// The keys only the Rust virtiofsd has stay commented out.
		conf, _ = withoutRustOnlyKeys(t, old.Bin, t.TempDir(), enableEveryKey(conf, share))
	}
	require.NoError(t, m.WriteFile("/etc/virtiofsd/vm1.conf", []byte(conf+"\n"), 0o644))
	m.sh(ctx, "systemctl enable --now virtiofsd@vm1.socket")
	sock := m.Path(shimbox.SocketPath("vm1"))
	first, err := vhostuser.Probe(sock, 10*time.Second)
	require.NoError(t, err)
	defer first.Close()
	pid1 := m.show(ctx, "virtiofsd@vm1.service", "MainPID")
	require.NotEqual(t, "0", pid1)
	require.Equal(t, pkgName+" "+old.Version, m.exeVersion(ctx, pid1))
	// The probe negotiated no state transfer: a restart would cut it.
	st1 := m.stateOf(ctx, "vm1", m.live(ctx, "vm1"))
	assert.False(t, st1.Movable, "a probe session cannot move")

	// Where virtiofsd can save its state (the Rust leg): vm2, a session
	// that can move (the front, the state transfer negotiated), and vm3,
	// one that cannot (FRONT=no).
	var moving *fakeVM
	var third net.Conn
	var pid2Before, pid3 string
	if leg.Rust() {
		require.NoError(t, m.WriteFile("/etc/virtiofsd/vm2.conf", []byte("SHARED_DIR="+share+"\n"), 0o644))
		require.NoError(t, m.WriteFile("/etc/virtiofsd/vm3.conf", []byte("SHARED_DIR="+share+"\nFRONT=no\n"), 0o644))
		m.sh(ctx, "systemctl start virtiofsd@vm2.socket virtiofsd@vm3.socket")
		moving, err = movableVM(m.Path(shimbox.SocketPath("vm2")), 10*time.Second)
		require.NoError(t, err)
		defer moving.Close()
		st := m.stateOf(ctx, "vm2", func(st *state.State) bool { return m.live(ctx, "vm2")(st) && st.Movable })
		assert.True(t, st.Front)
		pid2Before = m.show(ctx, "virtiofsd@vm2.service", "MainPID")
		third, err = vhostuser.Probe(m.Path(shimbox.SocketPath("vm3")), 10*time.Second)
		require.NoError(t, err)
		defer third.Close()
		pid3 = m.show(ctx, "virtiofsd@vm3.service", "MainPID")
		st = m.stateOf(ctx, "vm3", m.live(ctx, "vm3"))
		assert.Contains(t, st.UnmovableReason, "FRONT=no in /etc/virtiofsd/vm3.conf")
	}

	// Upgrade under them: a session that cannot move goes on with the old
	// shim, untouched, and the upgrade says why; one that can is restarted
	// onto the new shim, its VM kept.
	out := m.install(ctx, newer.Deb)
	t.Log(out)
	assert.Equal(t, pkgName+" "+newer.Version, m.sh(ctx, "/usr/libexec/virtiofsd-shim version"))
	require.NoError(t, vhostuser.GetFeatures(first, 10*time.Second), "the open session answers after the upgrade")
	assert.Equal(t, "active", m.show(ctx, "virtiofsd@vm1.service", "ActiveState"))
	assert.Equal(t, pid1, m.show(ctx, "virtiofsd@vm1.service", "MainPID"), "the running session was not restarted")
	assert.Equal(t, pkgName+" "+old.Version, m.exeVersion(ctx, pid1), "the running session keeps its shim")
	assert.Contains(t, out, "virtiofsd-shim: virtiofsd@vm1.service is left as it is: "+st1.UnmovableReason)
	if leg.Rust() {
		pid2 := m.show(ctx, "virtiofsd@vm2.service", "MainPID")
		assert.NotEqual(t, pid2Before, pid2, "the movable session runs a new shim")
		assert.Equal(t, pkgName+" "+newer.Version, m.exeVersion(ctx, pid2))
		st := m.stateOf(ctx, "vm2", m.live(ctx, "vm2"))
		assert.Equal(t, 1, st.Handovers, "the restart resumed the session")
		assert.Equal(t, state.Serving, st.Phase)
		require.NoError(t, moving.answers(), "the moved session answers its VM on the same connection")
		assert.Contains(t, out, "restarting virtiofsd@vm2.service")
		assert.Equal(t, pid3, m.show(ctx, "virtiofsd@vm3.service", "MainPID"), "FRONT=no: left as it is")
		assert.Contains(t, out, "virtiofsd@vm3.service is left as it is: FRONT=no")

		// An upgrade of virtiofsd: the FRONT=no session keeps the one it
		// runs, and list says it is older than the installed one.
		m.sh(ctx, `set -e
dpkg-deb -R /var/cache/apt/archives/virtiofsd_*.deb /var/tmp/pkgtest-repack
sed -i 's/^Version: .*/&+pkgtest1/' /var/tmp/pkgtest-repack/DEBIAN/control
dpkg-deb -b /var/tmp/pkgtest-repack /var/tmp/pkgtest-repack.deb >/dev/null
rm -r /var/tmp/pkgtest-repack
dpkg -i /var/tmp/pkgtest-repack.deb
rm /var/tmp/pkgtest-repack.deb`)
		assert.Equal(t, pid3, m.show(ctx, "virtiofsd@vm3.service", "MainPID"))
		listed := m.sh(ctx, "/usr/libexec/virtiofsd-shim list vm3")
		t.Log(listed)
		assert.Contains(t, listed, "runs an older virtiofsd")
		assert.Contains(t, listed, "its next session gets the installed binaries (this one cannot move: FRONT=no")
		require.NoError(t, moving.answers(), "the moved session still answers after virtiofsd's upgrade")
		moving.Close()
		third.Close()
		require.NoError(t, os.Remove(m.Path("/etc/virtiofsd/vm2.conf")))
		require.NoError(t, os.Remove(m.Path("/etc/virtiofsd/vm3.conf")))
	}
	assert.Equal(t, "enabled", m.sh(ctx, "systemctl is-enabled virtiofsd@vm1.socket"))
	assert.Equal(t, "active", m.show(ctx, "virtiofsd@vm1.socket", "ActiveState"))
	assert.Equal(t, "no", m.show(ctx, "virtiofsd@vm1.service", "NeedDaemonReload"))

	// The next session runs the new shim.
	first.Close()
	m.waitFor(ctx, "virtiofsd@vm1.service", "ActiveState", "inactive")
	second, err := vhostuser.Probe(sock, 10*time.Second)
	require.NoError(t, err)
	defer second.Close()
	pid2 := m.show(ctx, "virtiofsd@vm1.service", "MainPID")
	assert.NotEqual(t, pid1, pid2)
	assert.Equal(t, pkgName+" "+newer.Version, m.exeVersion(ctx, pid2), "the next session runs the new shim")

	// Remove with that session open: the instance is stopped and disabled,
	// the configs stay.
	files = strings.Split(m.sh(ctx, "dpkg -L "+pkgName), "\n")
	m.sh(ctx, "dpkg -r "+pkgName)
	require.NoError(t, second.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = second.Read(make([]byte, 1))
	assert.Error(t, err, "the session was ended")
	for _, unit := range []string{"virtiofsd@vm1.service", "virtiofsd@vm1.socket"} {
		out, _ := m.Run(ctx, "systemctl", "is-active", unit)
		assert.Equal(t, "inactive", strings.TrimSpace(out), unit)
	}
	assert.Empty(t, m.sh(ctx, "find /etc/systemd/system -name 'virtiofsd@*'"), "no instance left enabled")
	assert.Empty(t, m.sh(ctx, "systemctl list-units --all --plain --no-legend 'virtiofsd@*'"), "systemd forgot the units")
	_, err = os.Stat(sock)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Equal(t, "deinstall ok config-files", m.sh(ctx, "dpkg-query -W -f '${Status}' "+pkgName))
	assert.Equal(t, "/etc/virtiofsd/example.conf.sample\n/etc/virtiofsd/vm1.conf", m.sh(ctx, "ls /etc/virtiofsd/*"),
		"remove keeps the configs")

	// Purge, once the user deleted their own config: nothing is left.
	require.NoError(t, os.Remove(m.Path("/etc/virtiofsd/vm1.conf")))
	m.sh(ctx, "dpkg --purge "+pkgName)
	assert.Empty(t, m.status(ctx, pkgName))
	require.Contains(t, files, "/etc/virtiofsd")
	var left []string
	for _, f := range files {
		// Directories other packages share stay: only the package's own go.
		if f == "" || f == "/." || regexp.MustCompile(`^/(etc|etc/apparmor.d|etc/apparmor.d/abstractions|usr|usr/lib|usr/lib/systemd|usr/lib/systemd/system|usr/lib/systemd/user|usr/lib/systemd/system-generators|usr/lib/systemd/user-generators|usr/libexec|usr/share|usr/share/doc|usr/share/man|usr/share/man/man8|usr/share/lintian|usr/share/lintian/overrides)$`).MatchString(f) {
			continue
		}
		if _, err := os.Lstat(m.Path(f)); err == nil {
			left = append(left, f)
		}
	}
	assert.Empty(t, left, "files of the package left after purge")
}
