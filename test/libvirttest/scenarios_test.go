package libvirttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/libvirt"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"
)

// Scenario is one libvirt test, run on a leg's booted box in which
// StartLibvirt has run. Scenarios of one box use instance and domain names
// of their own, and leave no domain defined.
type Scenario struct {
	Name string
	Run  func(t *testing.T, b libvirt.Box, leg *libvirt.Leg)
}

// Scenarios are the libvirt tests every leg runs.
func Scenarios() []Scenario {
	return []Scenario{
		{"StartReadWriteAndSessions", StartReadWriteAndSessions},
		{"SocketOnlyForQEMUsGroup", SocketOnlyForQEMUsGroup},
		{"TwoDomainsSeeOnlyTheirOwnShares", TwoDomainsSeeOnlyTheirOwnShares},
		{"BrokenConfigFailsTheStartAndSaysWhy", BrokenConfigFailsTheStartAndSaysWhy},
	}
}

// guestTimeout bounds one boot under TCG (about 2-3 s here).
const guestTimeout = 90 * time.Second

// addInstance configures an instance whose socket QEMU's group reaches
// (SOCKET_GROUP and SOCKET_MODE=0660 in its config, applied by the generator
// on daemon-reload, as docs/configuration.md says), enables its socket and returns its
// share, inside the box.
func addInstance(t *testing.T, b libvirt.Box, leg *libvirt.Leg, name string, extra ...string) string {
	t.Helper()
	ctx := context.Background()
	extra = append(extra, "SOCKET_GROUP="+leg.SocketGroup, "SOCKET_MODE=0660")
	share, err := b.AddInstance(name, extra...)
	require.NoError(t, err)
	out, err := b.Systemctl(ctx, "daemon-reload")
	require.NoError(t, err, out)
	out, err = b.Systemctl(ctx, "enable", "--now", "virtiofsd@"+name+".socket")
	require.NoError(t, err, out)
	return share
}

// checkLibvirt runs `virtiofsd-shim check --libvirt NAME` in the box and
// parses what it printed: the test domains use exactly that.
func checkLibvirt(t *testing.T, b libvirt.Box, instance string) *domainxml.Parsed {
	t.Helper()
	out, err := b.Run(context.Background(), shimbox.BinaryPath, "check", "--libvirt", instance)
	require.NoError(t, err, out)
	p, err := domainxml.ParseSnippet(out)
	require.NoError(t, err, out)
	return p
}

// define defines a domain sharing the instances (mount tags = instance
// names), with the XML check --libvirt printed, and undefines it when the
// test ends.
func define(t *testing.T, b libvirt.Box, leg *libvirt.Leg, name, script string, instances ...string) *libvirt.Guest {
	t.Helper()
	d := libvirt.Domain{Name: name, Script: script}
	for _, inst := range instances {
		p := checkLibvirt(t, b, inst)
		d.Filesystems = append(d.Filesystems, p.Filesystem)
		d.MemoryBacking = p.MemoryBacking
	}
	g, err := libvirt.Define(context.Background(), b, leg.Image, d)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := g.Remove(context.Background()); err != nil {
			t.Errorf("remove domain %s: %v", name, err)
		}
	})
	return g
}

// run starts the domain and waits for its guest to power off, requiring
// that its script ran to the end with status 0.
func run(t *testing.T, g *libvirt.Guest) map[string]string {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	require.NoError(t, g.Start(ctx))
	started := time.Since(start)
	res, err := g.WaitShutOff(ctx, guestTimeout)
	require.NoError(t, err)
	t.Logf("domain %s: virsh start took %s, the guest ran %s more", g.Name, started.Round(time.Millisecond), (time.Since(start) - started).Round(time.Millisecond))
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	return res.Values
}

// unitState returns properties of a unit in the box.
func unitState(t *testing.T, b libvirt.Box, unit string, props ...string) map[string]string {
	t.Helper()
	p, err := unitprop.Show(context.Background(), b, unit, props...)
	require.NoError(t, err)
	return p
}

// waitSessionEnded waits for the instance's service to leave active and
// requires that it ended cleanly (inactive, Result=success) with the socket
// listening again.
func waitSessionEnded(t *testing.T, b libvirt.Box, instance string) {
	t.Helper()
	unit := "virtiofsd@" + instance + ".service"
	var last map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		m, err := unitprop.Show(context.Background(), b, unit, "ActiveState", "Result")
		if !assert.NoError(c, err) {
			return
		}
		if assert.Contains(c, []string{"inactive", "failed"}, m["ActiveState"]) {
			last = m
		}
	}, 30*time.Second, 50*time.Millisecond, "%s still active after its guest went away", unit)
	assert.Equal(t, map[string]string{"ActiveState": "inactive", "Result": "success"}, last, "%s ended its session cleanly", unit)
	assert.Equal(t, "listening", unitState(t, b, "virtiofsd@"+instance+".socket", "SubState")["SubState"])
}

// invocations are the invocation ids of the instance's sessions, oldest
// first, from the journal.
func invocations(t *testing.T, b libvirt.Box, instance string) []string {
	t.Helper()
	entries, err := b.Journal(context.Background(), "-u", "virtiofsd@"+instance+".service", "SYSLOG_IDENTIFIER=virtiofsd")
	require.NoError(t, err)
	var ids []string
	for _, e := range entries {
		id := e["_SYSTEMD_INVOCATION_ID"]
		if id != "" && (len(ids) == 0 || ids[len(ids)-1] != id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// StartReadWriteAndSessions: virsh define and start a domain whose share
// is an instance's socket; the guest reads and writes, and what it wrote is
// on the host with its content and owner. Its power-off ends the session
// cleanly; the next virsh start is a new session, and virsh destroy of that
// running guest ends it cleanly too.
func StartReadWriteAndSessions(t *testing.T, b libvirt.Box, leg *libvirt.Leg) {
	ctx := context.Background()
	share := addInstance(t, b, leg, "lv1", "CACHE=auto")
	host := b.Path(share)
	require.NoError(t, writeHostFile(host, "from-host", "hello from the host\n"))

	g := define(t, b, leg, "lv-rw", `set -e
mount -t virtiofs lv1 /mnt/lv1
cd /mnt/lv1
echo "RESULT read=$(cat from-host)"
echo "written by the guest" > from-guest
mkdir -p made/deeper
echo nested > made/deeper/file
chown 1234:2345 made/deeper/file
echo "RESULT boot=$(cat /proc/sys/kernel/random/boot_id)"
if [ -e wait-for-destroy ]; then
	echo MOUNTED-AND-WAITING
	sleep 600
fi
cd /
umount /mnt/lv1
`, "lv1")
	assert.Contains(t, g.XML, `<source socket="/run/virtiofsd/lv1.sock">`)

	first := run(t, g)
	assert.Equal(t, "hello from the host", first["read"])
	waitSessionEnded(t, b, "lv1")
	assert.Equal(t, "written by the guest\n", readHostFile(t, host, "from-guest"))
	assert.Equal(t, "nested\n", readHostFile(t, host, "made/deeper/file"))
	// The guest's root writes as root; its chown is the host's owner.
	assertOwner(t, filepath.Join(host, "from-guest"), 0, 0)
	assertOwner(t, filepath.Join(host, "made/deeper/file"), 1234, 2345)
	require.Len(t, invocations(t, b, "lv1"), 1)

	// The next start is a new session (socket activation, no restart) ...
	require.NoError(t, writeHostFile(host, "wait-for-destroy", ""))
	require.NoError(t, g.Start(ctx))
	require.NoError(t, g.WaitConsole("MOUNTED-AND-WAITING", guestTimeout))
	assert.Contains(t, g.Console(), "RESULT read=hello from the host")
	assert.NotContains(t, g.Console(), "RESULT boot="+first["boot"], "a new boot")
	assert.Equal(t, "active", unitState(t, b, "virtiofsd@lv1.service", "ActiveState")["ActiveState"])
	ids := invocations(t, b, "lv1")
	require.Len(t, ids, 2)
	assert.NotEqual(t, ids[0], ids[1])

	// ... and virsh destroy of the running guest ends it cleanly as well.
	require.NoError(t, g.Destroy(ctx))
	waitSessionEnded(t, b, "lv1")
	require.Len(t, invocations(t, b, "lv1"), 2)
	assert.Equal(t, "0", unitState(t, b, "virtiofsd@lv1.service", "NRestarts")["NRestarts"])
}

// SocketOnlyForQEMUsGroup: the socket belongs to QEMU's group, mode 0660;
// QEMU's user reaches it (a domain starts) and a user outside the group is
// refused at connect.
func SocketOnlyForQEMUsGroup(t *testing.T, b libvirt.Box, leg *libvirt.Leg) {
	ctx := context.Background()
	addInstance(t, b, leg, "lvperm")
	sock := shimbox.SocketPath("lvperm")
	out, err := b.Run(ctx, "stat", "-c", "%U %G %a", sock)
	require.NoError(t, err, out)
	assert.Equal(t, "root "+leg.SocketGroup+" 660", strings.TrimSpace(out))

	// nobody (group nogroup) cannot connect; logger(1) connects to a unix
	// socket and says why it could not.
	out, err = b.Run(ctx, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"logger", "--socket-errors=on", "-u", sock, "probe")
	require.Error(t, err, "nobody connected to %s: %s", sock, out)
	assert.Contains(t, out, "Permission denied")
	// ... and started no session.
	assert.Equal(t, "inactive", unitState(t, b, "virtiofsd@lvperm.service", "ActiveState")["ActiveState"])

	// QEMU, as libvirt runs it, does.
	g := define(t, b, leg, "lv-perm", `set -e
mount -t virtiofs lvperm /mnt/lvperm
echo "RESULT qemu=$(ls -ld /mnt/lvperm | cut -c1-10)"
umount /mnt/lvperm
`, "lvperm")
	require.NoError(t, g.Start(ctx))
	out, err = b.Run(ctx, "ps", "-o", "user=", "-C", "qemu-system-x86_64")
	require.NoError(t, err, out)
	assert.Contains(t, strings.Fields(out), leg.QEMUUser, "QEMU runs as %s", leg.QEMUUser)
	res, err := g.WaitShutOff(ctx, guestTimeout)
	require.NoError(t, err)
	assert.Equal(t, 0, res.ExitStatus, res.Serial)
	waitSessionEnded(t, b, "lvperm")
}

// TwoDomainsSeeOnlyTheirOwnShares: two domains, each with two instances,
// run at once; each guest sees and writes only its own directories.
func TwoDomainsSeeOnlyTheirOwnShares(t *testing.T, b libvirt.Box, leg *libvirt.Leg) {
	ctx := context.Background()
	doms := map[string][]string{"lv-a": {"lva1", "lva2"}, "lv-b": {"lvb1", "lvb2"}}
	shares := map[string]string{}
	for _, insts := range doms {
		for _, inst := range insts {
			shares[inst] = b.Path(addInstance(t, b, leg, inst))
			require.NoError(t, writeHostFile(shares[inst], "only-in-"+inst, ""))
		}
	}
	guests := map[string]*libvirt.Guest{}
	for name, insts := range doms {
		script := "set -e\n"
		for _, inst := range insts {
			script += fmt.Sprintf(`mount -t virtiofs %[1]s /mnt/%[1]s
echo "RESULT %[1]s=$(ls /mnt/%[1]s | tr '\n' ' ')"
echo %[2]s > /mnt/%[1]s/written-by-%[2]s
umount /mnt/%[1]s
`, inst, name)
		}
		// The other domain's tags are not there.
		var foreign []string
		for other, theirs := range doms {
			if other != name {
				foreign = append(foreign, theirs...)
			}
		}
		script += "for t in " + strings.Join(foreign, " ") + "; do mkdir -p /mnt/$t; mount -t virtiofs $t /mnt/$t 2>/dev/null && echo \"RESULT foreign=$t\" || true; done\n"
		guests[name] = define(t, b, leg, name, script, insts...)
	}
	for _, g := range guests {
		require.NoError(t, g.Start(ctx))
	}
	for name, g := range guests {
		res, err := g.WaitShutOff(ctx, guestTimeout)
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitStatus, res.Serial)
		for _, inst := range doms[name] {
			assert.Equal(t, "only-in-"+inst+" ", res.Values[inst], "%s lists %s", name, inst)
		}
		assert.Empty(t, res.Values["foreign"], "%s mounted another domain's tag", name)
	}
	for name, insts := range doms {
		for _, inst := range insts {
			waitSessionEnded(t, b, inst)
			assert.Equal(t, []string{"only-in-" + inst, "written-by-" + name}, listHostDir(t, shares[inst]))
			require.Len(t, invocations(t, b, inst), 1, inst)
		}
	}
}

// BrokenConfigFailsTheStartAndSaysWhy: a domain whose instance's config is
// broken does not start; virsh's error names the socket and QEMU's
// complaint, the instance's journal names the key and the fix. Fixed, the
// next virsh start works.
func BrokenConfigFailsTheStartAndSaysWhy(t *testing.T, b libvirt.Box, leg *libvirt.Leg) {
	ctx := context.Background()
	addInstance(t, b, leg, "lvbad")
	g := define(t, b, leg, "lv-bad", `set -e
mount -t virtiofs lvbad /mnt/lvbad
echo "RESULT listing=$(ls /mnt/lvbad | tr '\n' ' ')"
umount /mnt/lvbad
`, "lvbad")
	// Broken after check --libvirt passed: the admin edits the config.
	share, err := b.AddInstance("lvbad", "CACHE=sometimes")
	require.NoError(t, err)

	err = g.Start(ctx)
	require.Error(t, err, "a domain whose share cannot be served started")
	t.Logf("virsh start: %v", err)
	// QEMU's words through libvirt: the device of the tag, and that its
	// vhost-user backend did not answer.
	assert.Contains(t, err.Error(), `"tag":"lvbad"`, "virsh's error names the device")
	assert.Contains(t, err.Error(), "vhost", "virsh's error says its vhost-user backend failed (QEMU 7.2: vhost_backend_init failed: Protocol error)")
	state, serr := g.State(ctx)
	require.NoError(t, serr)
	assert.Equal(t, "shut off", state)

	entries, jerr := b.Journal(ctx, "-u", "virtiofsd@lvbad.service")
	require.NoError(t, jerr)
	var said []string
	for _, e := range entries {
		said = append(said, e["MESSAGE"])
	}
	assert.Contains(t, strings.Join(said, "\n"), "lvbad.conf:2: CACHE=sometimes", "the journal names the file, line and key")
	assert.Equal(t, "exit-code", unitState(t, b, "virtiofsd@lvbad.service", "Result")["Result"])

	// Fixed (and the unit's failure cleared), the next start works.
	_, err = b.AddInstance("lvbad", "CACHE=auto")
	require.NoError(t, err)
	out, err := b.Systemctl(ctx, "reset-failed", "virtiofsd@lvbad.socket", "virtiofsd@lvbad.service")
	require.NoError(t, err, out)
	out, err = b.Systemctl(ctx, "start", "virtiofsd@lvbad.socket")
	require.NoError(t, err, out)
	require.NoError(t, writeHostFile(b.Path(share), "fixed", ""))
	assert.Equal(t, "fixed ", run(t, g)["listing"])
	waitSessionEnded(t, b, "lvbad")
}

// Helpers on the host side of a share.

func writeHostFile(dir, name, content string) error {
	return writeFile(filepath.Join(dir, name), content)
}

func readHostFile(t *testing.T, dir, name string) string {
	t.Helper()
	s, err := readFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return s
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o644)
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// assertOwner checks a file's owner on the host.
func assertOwner(t *testing.T, path string, uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	st, ok := fi.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	assert.Equal(t, [2]uint32{uid, gid}, [2]uint32{st.Uid, st.Gid}, "owner uid, gid of %s", path)
}

// listHostDir lists a directory's names, sorted.
func listHostDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
