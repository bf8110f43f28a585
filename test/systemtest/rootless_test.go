package systemtest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// maxUserExposure is what systemd-analyze --user security says of the user
// virtiofsd@.service (9.8 without its sandboxing lines, 7.0 with the seccomp
// ones alone). A change that raises it must say why, here and in the unit:
// 4.0 until ProtectKernelTunables=, ProtectKernelLogs= and ProtectHostname=
// went, which systemd 257 applies over /proc, where they keep virtiofsd's
// sandbox from mounting its own proc.
const maxUserExposure = 4.5

// rootlessLeg is a platform the rootless test runs on: a box with the
// project installed, and the Rust virtiofsd it runs (VIRTIOFSD= of the
// user's configs; "" when the platform installs it at
// /usr/libexec/virtiofsd).
type rootlessLeg struct {
	name string
	boot func(t *testing.T) (b *shimbox.Box, virtiofsd string)
	// cVirtiofsd: the leg has QEMU's C virtiofsd at virtiofsd.CVirtiofsd
	// (Debian 13 has none: its /usr/lib/qemu/virtiofsd is a link to the
	// Rust one).
	cVirtiofsd bool
}

// bootWithUser boots the leg's box and adds the user vmuser to it: a
// context that ends in 5 minutes (or with the test), the box, the leg's
// Rust virtiofsd (see rootlessLeg) and the user.
func (l rootlessLeg) bootWithUser(t *testing.T) (context.Context, *shimbox.Box, string, *shimbox.User) {
	t.Helper()
	b, rust := l.boot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	u, err := b.AddUser(ctx, "vmuser")
	require.NoError(t, err)
	return ctx, b, rust, u
}

// rootlessLegs: Debian 12's box (systemd 252) with Debian 13's real Rust
// virtiofsd run through that tree's loader, and the Debian 13 box (systemd
// 257) with the project installed from its .deb, which brings
// /usr/libexec/virtiofsd. FullProc: /proc as a real host has it, so that
// virtiofsd's sandbox may mount its own proc in its user namespace.
var rootlessLegs = []rootlessLeg{{"debian12", func(t *testing.T) (*shimbox.Box, string) {
	b := shimbox.New(t, shimbox.Options{Name: "rootless", FullProc: true}) // skips, saying why, when not root
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tree, err := distro.Debian13(ctx)
	require.NoError(t, err, "the Debian 13 tree, for its Rust virtiofsd")
	rust, err := tree.RustVirtiofsd()
	require.NoError(t, err)
	return b, rust
}, true}, {"debian13", func(t *testing.T) (*shimbox.Box, string) {
	return shimbox.New(t, shimbox.Options{Name: "rootless", FullProc: true, Platform: shimbox.Debian13}), ""
}, false}}

// userImage is the guest image with its kernel copied under the box's Root,
// which the box sees at the same path on every leg (the Debian 13 box does
// not see the host's image cache), for a QEMU run as the user in the box.
func userImage(t *testing.T, b *shimbox.Box, img *guest.Image) *guest.Image {
	t.Helper()
	k, err := os.ReadFile(img.Kernel)
	require.NoError(t, err)
	c := *img
	c.Kernel = filepath.Join(b.Root, "guest-kernel")
	require.NoError(t, os.WriteFile(c.Kernel, k, 0o644))
	return &c
}

// TestRootlessInstanceServesAUsersGuest is issue 14's "done when": a test
// user's own manager runs a socket-activated instance
// (systemctl --user enable --now virtiofsd@vm1.socket) that a real guest,
// started as that user, mounts read-write through the user's socket, two
// sessions in a row; what the guest creates belongs to the user on the
// host; list --user shows the instance; a bad config and the C virtiofsd
// get their clear errors.
func TestRootlessInstanceServesAUsersGuest(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && os.Geteuid() == 0 {
		t.Fatalf("qemu-system-x86_64 not installed (apt-get install qemu-system-x86): %v", err)
	}
	for _, leg := range rootlessLegs {
		t.Run(leg.name, func(t *testing.T) { testRootless(t, leg) })
	}
}

func testRootless(t *testing.T, leg rootlessLeg) {
	ctx, b, rust, u := leg.bootWithUser(t)

	share, err := u.Share("vm1")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(share, "hello"), []byte("from the host\n"), 0o644))
	require.NoError(t, os.Chown(filepath.Join(share, "hello"), u.UID, u.GID))
	configureRootless(t, u, "vm1", share, rust)
	userctl(t, u, "enable", "--now", "virtiofsd@vm1.socket")
	require.Equal(t, "active/listening", state(t, u, "virtiofsd@vm1.socket"))

	// The user units verify, and their sandbox keeps its measured exposure.
	verify := filepath.Join(u.Home, "verify")
	require.NoError(t, os.MkdirAll(verify, 0o755))
	userUnits, err := shimbox.UserUnits()
	require.NoError(t, err)
	for name, path := range userUnits {
		unit, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(verify, strings.Replace(name, "@.", "@vm1.", 1)), unit, 0o644))
	}
	out, err := u.Run(ctx, "systemd-analyze", "--user", "verify", "--man=no",
		filepath.Join(verify, "virtiofsd@vm1.socket"), filepath.Join(verify, "virtiofsd@vm1.service"))
	assert.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(out), "systemd-analyze --user verify")
	out, err = u.Run(ctx, "systemd-analyze", "--user", "security", "--no-pager", "virtiofsd@vm1.service")
	require.NoError(t, err, out)
	m := regexp.MustCompile(`Overall exposure level for virtiofsd@vm1\.service: ([0-9.]+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	level, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	assert.LessOrEqual(t, level, maxUserExposure, out)

	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	img = userImage(t, b, img)
	sessions := []string{`set -e
mount -t virtiofs vm1 /mnt/vm1
echo "RESULT read=$(cat /mnt/vm1/hello)"
echo "session one" >/mnt/vm1/one
mkdir /mnt/vm1/dir
echo "in dir" >/mnt/vm1/dir/file
if mknod /mnt/vm1/null c 1 3 2>/dev/null; then echo "RESULT mknod=yes"; else echo "RESULT mknod=no"; fi
sync
echo "RESULT done=yes"
`, `set -e
mount -t virtiofs vm1 /mnt/vm1
echo "RESULT read=$(cat /mnt/vm1/one)"
mv /mnt/vm1/one /mnt/vm1/dir/two
rm /mnt/vm1/hello
sync
echo "RESULT done=yes"
`}
	for i, script := range sessions {
		res, err := guest.Run(ctx, img, guest.Spec{
			Shares:  []guest.Share{{Tag: "vm1", Socket: u.Socket("vm1")}},
			Script:  script,
			Command: u.Command, // QEMU runs as the user, in the box
			WorkDir: b.Root,
		})
		if err != nil {
			t.Log(status(u, "virtiofsd@vm1.service"))
		}
		require.NoError(t, err, "session %d", i+1)
		require.Equal(t, 0, res.ExitStatus, res.Serial)
		assert.Equal(t, "yes", res.Values["done"], "session %d", i+1)
		if i == 0 {
			assert.Equal(t, "from the host", res.Values["read"])
			assert.Equal(t, "no", res.Values["mknod"], "a rootless virtiofsd cannot make device nodes")
		} else {
			assert.Equal(t, "session one", res.Values["read"])
		}
		// The guest powered off: the session ended cleanly, the socket
		// listens again for the next one.
		waitState(t, u, "virtiofsd@vm1.service", "inactive/dead")
		assert.Equal(t, "success", show(t, u, "virtiofsd@vm1.service", "Result")["Result"])
		assert.Equal(t, "active/listening", state(t, u, "virtiofsd@vm1.socket"))
	}
	got, err := os.ReadFile(filepath.Join(share, "dir", "two"))
	require.NoError(t, err)
	assert.Equal(t, "session one\n", string(got))
	assert.NoFileExists(t, filepath.Join(share, "hello"))
	for _, p := range []string{"dir", "dir/two", "dir/file"} {
		fi, err := os.Stat(filepath.Join(share, p))
		if assert.NoError(t, err) {
			st := fi.Sys().(*syscall.Stat_t)
			assert.Equal(t, []uint32{uint32(u.UID), uint32(u.GID)}, []uint32{st.Uid, st.Gid}, "%s belongs to the user on the host", p)
		}
	}

	// The journal: the shim says once, as information, what a rootless
	// virtiofsd cannot do; virtiofsd's own warnings about it are notices.
	entries, err := u.Journal(ctx, "-u", "virtiofsd@vm1.service")
	require.NoError(t, err)
	var notices, rootless int
	for _, e := range entries {
		m := e["MESSAGE"]
		switch {
		case strings.HasPrefix(m, "rootless:"):
			rootless++
			assert.Equal(t, "6", e["PRIORITY"], "info: %s", m)
		case strings.HasPrefix(m, "Couldn't set the process uid as root"):
			notices++
			assert.Equal(t, "5", e["PRIORITY"], "notice, not a warning: %s", m)
		}
		if p := e["PRIORITY"]; p != "" && p <= "3" {
			t.Errorf("error in the journal of a good session: %s", m)
		}
	}
	assert.Equal(t, 2, rootless, "one rootless notice per session")
	assert.Equal(t, 2, notices, "virtiofsd's uid warning, once per session, as a notice")

	// list --user, as the user, over their manager.
	out, err = u.Run(ctx, shimbox.BinaryPath, "list", "--user", "--json")
	require.NoError(t, err)
	var list struct {
		Instances []struct {
			Instance string `json:"instance"`
			Socket   *struct {
				ActiveState string `json:"active_state"`
				SubState    string `json:"sub_state"`
			} `json:"socket"`
			Config struct {
				SharedDir *string `json:"shared_dir"`
			} `json:"config"`
		} `json:"instances"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list.Instances, 1, out)
	assert.Equal(t, "vm1", list.Instances[0].Instance)
	if assert.NotNil(t, list.Instances[0].Socket, out) {
		assert.Equal(t, "active/listening", list.Instances[0].Socket.ActiveState+"/"+list.Instances[0].Socket.SubState)
	}
	if assert.NotNil(t, list.Instances[0].Config.SharedDir, out) {
		assert.Equal(t, share, *list.Instances[0].Config.SharedDir)
	}
	table, err := u.Run(ctx, shimbox.BinaryPath, "list", "--user")
	require.NoError(t, err)
	assert.Contains(t, table, "vm1")

	// A bad config: its error in systemctl --user status and the journal.
	require.NoError(t, u.Configure("bad", "SHARED_DIR=relative/dir\n"))
	checkUserStartFails(t, u, "bad", "78", "bad.conf:1: SHARED_DIR=relative/dir: not an absolute path")
	// The C virtiofsd: refused, saying what to install.
	if leg.cVirtiofsd {
		require.NoError(t, u.Configure("cflavor", "SHARED_DIR="+share+"\nVIRTIOFSD="+virtiofsd.CVirtiofsd+"\n"))
		checkUserStartFails(t, u, "cflavor", "69", "the C one cannot run without root")
		assert.Contains(t, status(u, "virtiofsd@cflavor.service"), "Debian 13, Ubuntu 24.04: apt install virtiofsd; Fedora: dnf install virtiofsd")
		// check --user says the same, offline.
		out, err = u.Run(ctx, shimbox.BinaryPath, "check", "--user", "cflavor")
		assert.Error(t, err)
		assert.Contains(t, out, "apt install virtiofsd")
	}
	out, err = u.Run(ctx, shimbox.BinaryPath, "check", "--user", "vm1")
	assert.NoError(t, err)
	assert.Contains(t, out, "--sandbox=namespace")
	assert.Contains(t, out, u.Socket("vm1"))

	// systemctl --user reload under the user's own manager: the service's
	// ExecReload= (reload --user) asks the shim, which swaps the waiting
	// Rust virtiofsd for a fresh one; the same shim goes on.
	userctl(t, u, "start", "virtiofsd@vm1.service")
	before := waitingUserService(t, u, "vm1", 0)
	userctl(t, u, "reload", "virtiofsd@vm1.service")
	after := waitingUserService(t, u, "vm1", *before.VirtiofsdPID)
	assert.Equal(t, *before.MainPID, *after.MainPID, "the same shim")
	assert.Equal(t, "active/running", state(t, u, "virtiofsd@vm1.service"))
	userctl(t, u, "stop", "virtiofsd@vm1.service")
}

// waitingUserService waits until list --user shows the user's instance
// with a virtiofsd other than old waiting for its VM, and returns it.
func waitingUserService(t *testing.T, u *shimbox.User, instance string, old int) *instances.Service {
	t.Helper()
	var svc *instances.Service
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := u.Run(context.Background(), shimbox.BinaryPath, "list", "--user", "--json", instance)
		if !assert.NoError(c, err, out) {
			return
		}
		var l instances.Document
		if !assert.NoError(c, json.Unmarshal([]byte(out), &l), out) || !assert.Len(c, l.Instances, 1, out) {
			return
		}
		svc = l.Instances[0].Service
		if assert.NotNil(c, svc, out) && assert.NotNil(c, svc.MainPID, out) && assert.NotNil(c, svc.VirtiofsdPID, out) {
			assert.NotEqual(c, old, *svc.VirtiofsdPID, out)
		}
	}, 30*time.Second, 200*time.Millisecond)
	return svc
}

// checkUserStartFails starts a user instance's service and checks that it
// fails with the exit status and that the message reaches both systemctl
// --user status and the journal.
func checkUserStartFails(t *testing.T, u *shimbox.User, instance, exitStatus, message string) {
	t.Helper()
	unit := "virtiofsd@" + instance + ".service"
	_, err := u.Systemctl(context.Background(), "start", unit)
	require.Error(t, err, "%s must fail", unit)
	waitState(t, u, unit, "failed/failed")
	assert.Equal(t, exitStatus, show(t, u, unit, "ExecMainStatus")["ExecMainStatus"])
	st := status(u, unit)
	assert.Contains(t, st, message, "systemctl --user status %s", unit)
	var found bool
	entries, err := u.Journal(context.Background(), "-u", unit, "-p", "err")
	require.NoError(t, err)
	for _, m := range shimbox.Messages(entries) {
		found = found || strings.Contains(m, message)
	}
	assert.True(t, found, "journalctl --user -u %s has %q at priority err", unit, message)
}

// configureRootless writes the user's ~/.config/virtiofsd/INSTANCE.conf:
// SHARED_DIR, the extra lines, and VIRTIOFSD= when the leg's virtiofsd is
// not the one the user's PATH finds (rust, from rootlessLeg.boot).
func configureRootless(t *testing.T, u *shimbox.User, instance, share, rust string, extra ...string) {
	t.Helper()
	conf := "SHARED_DIR=" + share + "\n"
	for _, l := range extra {
		conf += l + "\n"
	}
	if rust != "" {
		conf += "VIRTIOFSD=" + rust + "\n"
	}
	require.NoError(t, u.Configure(instance, conf))
}

func userctl(t *testing.T, u *shimbox.User, args ...string) string {
	t.Helper()
	out, err := u.Systemctl(context.Background(), args...)
	require.NoError(t, err)
	return out
}

// TestRootlessUIDMapFromSubuid follows docs/rootless.md's "More than your own id":
// a user's instance with UID_MAP/GID_MAP from their /etc/subuid and
// /etc/subgid ranges and that page's drop-in; the guest's root writes as the
// range's first id on the host, through newuidmap/newgidmap.
func TestRootlessUIDMapFromSubuid(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && os.Geteuid() == 0 {
		t.Fatalf("qemu-system-x86_64 not installed (apt-get install qemu-system-x86): %v", err)
	}
	for _, leg := range rootlessLegs {
		t.Run(leg.name, func(t *testing.T) { testRootlessUIDMap(t, leg) })
	}
}

func testRootlessUIDMap(t *testing.T, leg rootlessLeg) {
	if _, err := exec.LookPath("newuidmap"); err != nil && os.Geteuid() == 0 {
		t.Fatalf("newuidmap not installed (apt-get install uidmap): %v", err)
	}
	dropIn := docsUIDMapDropIn(t)
	ctx, b, rust, u := leg.bootWithUser(t)
	// The ranges useradd gave the user, or one of our own.
	sub := map[string]string{}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		out, _ := b.Run(ctx, "sh", "-c", "grep '^vmuser:' "+f+" | head -1 | cut -d: -f2")
		if sub[f] = strings.TrimSpace(out); sub[f] == "" {
			_, err := b.Run(ctx, "usermod", "--add-subuids", "300000-365535", "--add-subgids", "300000-365535", "vmuser")
			require.NoError(t, err)
			sub["/etc/subuid"], sub["/etc/subgid"] = "300000", "300000"
			break
		}
	}
	share, err := u.Share("mapped")
	require.NoError(t, err)
	// The range's ids must reach the share: Debian 13's useradd makes the
	// home 0700 (HOME_MODE); docs/rootless.md says to open it for search. Group
	// too: virtiofsd keeps the user's own group as a supplementary one, and
	// the group's bits then apply instead of others'.
	_, err = u.Run(ctx, "chmod", "go+x", u.Home)
	require.NoError(t, err)
	// The share belongs to the range's first ids: the guest's root.
	hostUID, hostGID := atoi(t, sub["/etc/subuid"]), atoi(t, sub["/etc/subgid"])
	require.NoError(t, os.Chown(share, hostUID, hostGID))
	configureRootless(t, u, "mapped", share, rust, "UID_MAP=:0:"+sub["/etc/subuid"]+":65536:", "GID_MAP=:0:"+sub["/etc/subgid"]+":65536:")
	// Without the drop-in: no_new_privs, refused with the way out.
	checkUserStartFails(t, u, "mapped", "78", "UID_MAP= needs newuidmap/newgidmap, which are set-user-ID, but this service runs with no_new_privs")
	userctl(t, u, "reset-failed")
	userctl(t, u, "stop", "virtiofsd@mapped.socket")
	dir := filepath.Join(u.Home, ".config", "systemd", "user", "virtiofsd@mapped.service.d")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "override.conf"), []byte(dropIn), 0o644))
	require.NoError(t, exec.Command("chown", "-R", strconv.Itoa(u.UID)+":"+strconv.Itoa(u.GID), filepath.Join(u.Home, ".config", "systemd")).Run())
	userctl(t, u, "daemon-reload")
	userctl(t, u, "enable", "--now", "virtiofsd@mapped.socket")

	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	img = userImage(t, b, img)
	res, err := guest.Run(ctx, img, guest.Spec{
		Shares: []guest.Share{{Tag: "mapped", Socket: u.Socket("mapped")}},
		Script: `set -e
mount -t virtiofs mapped /mnt/mapped
echo root >/mnt/mapped/by-root
echo other >/mnt/mapped/by-1000
chown 1000:1000 /mnt/mapped/by-1000
echo "RESULT owner=$(stat -c %u:%g /mnt/mapped/by-1000)"
sync
echo "RESULT done=yes"
`,
		Command: u.Command,
		WorkDir: b.Root,
	})
	if err != nil {
		t.Log(status(u, "virtiofsd@mapped.service"))
	}
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "yes", res.Values["done"])
	assert.Equal(t, "1000:1000", res.Values["owner"], "the guest sees the ids it set")
	for file, want := range map[string][2]int{"by-root": {hostUID, hostGID}, "by-1000": {hostUID + 1000, hostGID + 1000}} {
		fi, err := os.Stat(filepath.Join(share, file))
		if assert.NoError(t, err) {
			st := fi.Sys().(*syscall.Stat_t)
			assert.Equal(t, want, [2]int{int(st.Uid), int(st.Gid)}, "%s on the host: the range's ids", file)
		}
	}
	waitState(t, u, "virtiofsd@mapped.service", "inactive/dead")
	assert.Equal(t, "success", show(t, u, "virtiofsd@mapped.service", "Result")["Result"])
}

// docsUIDMapDropIn is the drop-in docs/rootless.md gives for UID_MAP/GID_MAP.
func docsUIDMapDropIn(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), "docs", "rootless.md"))
	require.NoError(t, err)
	const start = "```ini\n# ~/.config/systemd/user/virtiofsd@vm1.service.d/override.conf: UID_MAP/GID_MAP\n"
	_, rest, ok := strings.Cut(string(doc), start)
	require.True(t, ok, "docs/rootless.md has the UID_MAP drop-in block")
	block, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	return block
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "%q", s)
	return n
}

// TestRootlessUserGeneratorAppliesSocketModeAndStandby: the user generator
// (run by the user's manager on daemon-reload) makes SOCKET_MODE and
// STANDBY=yes of ~/.config/virtiofsd/NAME.conf apply to the user's instance,
// leaves SOCKET_GROUP out (check --user says so), and stopping the socket
// ends the waiting virtiofsd.
func TestRootlessUserGeneratorAppliesSocketModeAndStandby(t *testing.T) {
	for _, leg := range rootlessLegs {
		t.Run(leg.name, func(t *testing.T) { testRootlessUserGenerator(t, leg) })
	}
}

func testRootlessUserGenerator(t *testing.T, leg rootlessLeg) {
	ctx, b, rust, u := leg.bootWithUser(t)
	share, err := u.Share("sb")
	require.NoError(t, err)
	configureRootless(t, u, "sb", share, rust, "SOCKET_MODE=0660", "SOCKET_GROUP=kvm", "STANDBY=yes")
	userctl(t, u, "daemon-reload")
	userctl(t, u, "enable", "--now", "virtiofsd@sb.socket")
	const unit = "virtiofsd@sb.service"

	p := show(t, u, "virtiofsd@sb.socket", "SocketMode", "SocketGroup", "DropInPaths")
	assert.Equal(t, "0660", p["SocketMode"], "the user unit's own is 0600")
	assert.Empty(t, p["SocketGroup"])
	assert.Contains(t, p["DropInPaths"], filepath.Join(u.RuntimeDir(), "systemd", "generator", "virtiofsd@sb.socket.d", "50-virtiofsd-shim.conf"))
	fi, err := os.Stat(b.Path(u.Socket("sb")))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, []uint32{uint32(u.UID), uint32(u.GID)}, []uint32{st.Uid, st.Gid}, "the socket is the user's")

	// STANDBY=yes: a virtiofsd waits before any VM, and after each.
	waitUserPhase := func(phase shimstate.Phase, session int) {
		t.Helper()
		ok := assert.EventuallyWithT(t, func(c *assert.CollectT) {
			st, err := u.LiveState(ctx, "sb")
			if !assert.NoError(c, err) || !assert.NotNil(c, st, "no running shim has published its state") {
				return
			}
			assert.Equal(c, phase, st.Phase)
			assert.True(c, st.Standby)
			assert.Equal(c, session, st.SessionNumber)
		}, waitFor, 20*time.Millisecond)
		if !ok {
			t.Fatalf("%s: never %s in session %d\n%s", unit, phase, session, status(u, unit))
		}
	}
	waitUserPhase(shimstate.Waiting, 1)
	mainPID := show(t, u, unit, "MainPID")["MainPID"]
	for session := 1; session <= 2; session++ {
		// As root from the host: SOCKET_MODE is what is tested, not who.
		vm, err := vhostuser.Probe(b.Path(u.Socket("sb")), dialTimeout)
		require.NoError(t, err, "session %d", session)
		waitUserPhase(shimstate.Serving, session)
		require.NoError(t, vm.Close())
		waitUserPhase(shimstate.Waiting, session+1)
	}
	assert.Equal(t, mainPID, show(t, u, unit, "MainPID")["MainPID"], "one service run served both sessions")

	// check --user shows the user generator's drop-ins, applied.
	out, err := u.Run(ctx, shimbox.BinaryPath, "check", "--user", "sb")
	require.NoError(t, err, out)
	assert.Contains(t, out, "### "+filepath.Join(u.RuntimeDir(), "systemd", "generator", "virtiofsd@sb.socket.d", "50-virtiofsd-shim.conf"))
	assert.Contains(t, out, "ExecStartPost=-/usr/libexec/virtiofsd-shim standby --user --instance=%i")
	assert.Contains(t, out, "warning: SOCKET_USER and SOCKET_GROUP are ignored for a user instance")
	assert.NotContains(t, out, "warning: "+filepath.Join(u.RuntimeDir(), "systemd", "generator"), "nothing pending")

	// Stopping the socket (its ExecStopPre=, release --user) ends the
	// waiting virtiofsd, cleanly.
	userctl(t, u, "stop", "virtiofsd@sb.socket")
	waitState(t, u, unit, "inactive/dead")
	assert.Equal(t, "success", show(t, u, unit, "Result")["Result"])
}
