package sdbox_test

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
)

// TestMain fails the run if any box outlived its test: boxes are children
// of the test binary.
func TestMain(m *testing.M) {
	code := m.Run()
	if left := children(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "processes left behind by the tests: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

func children() []string {
	me := strconv.Itoa(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me {
			out = append(out, e.Name()+" "+s[:strings.LastIndexByte(s, ')')+1])
		}
	}
	return out
}

const sleeper = `[Service]
ExecStart=/bin/sh -c 'echo sleeper says hello; exec sleep infinity'
`

func run(t *testing.T, box *sdbox.Box, name string, args ...string) string {
	t.Helper()
	out, err := box.Run(t.Context(), name, args...)
	require.NoError(t, err)
	return strings.TrimSpace(out)
}

func TestBootsToRunning(t *testing.T) {
	t.Parallel()
	box := sdbox.New(t, sdbox.Options{})

	out, err := box.Run(t.Context(), "systemctl", "is-system-running")
	assert.NoError(t, err, "failed units: %s", run(t, box, "systemctl", "--failed", "--no-pager"))
	assert.Equal(t, "running", strings.TrimSpace(out))
	assert.Equal(t, "systemd", run(t, box, "cat", "/proc/1/comm"), "PID 1 inside")
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", box.PID()))
	require.NoError(t, err)
	assert.Equal(t, "systemd\n", string(comm), "PID() on the host")
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", box.PID()))
	require.NoError(t, err)
	assert.Contains(t, string(cg), "/sdbox/sdbox-", "systemd's cgroup is the box's own, not the hierarchy's root")
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", box.PID()))
	require.NoError(t, err)
	assert.Contains(t, strings.Split(string(env), "\x00"), "container=sdbox")
}

func TestUnitFromOptionsRunsAndLogs(t *testing.T) {
	t.Parallel()
	box := sdbox.New(t, sdbox.Options{Units: map[string]string{"sleeper.service": sleeper}})

	run(t, box, "systemctl", "start", "sleeper.service")
	assert.Equal(t, "active", run(t, box, "systemctl", "is-active", "sleeper.service"))
	assert.Greater(t, len(box.Processes()), 2, "systemd, journald and the sleeper")
	assert.Eventually(t, func() bool {
		out, _ := box.Run(t.Context(), "journalctl", "-u", "sleeper.service", "-o", "cat", "--no-pager")
		return strings.Contains(out, "sleeper says hello")
	}, 5*time.Second, 50*time.Millisecond, "the sleeper's line in the box's journal")
	out := run(t, box, "journalctl", "-o", "cat", "--no-pager")
	assert.NotContains(t, out, "-- Boot", "only one boot in the box's journal")
}

// snapshot lists a directory tree with symbolic link targets.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target, _ := os.Readlink(path)
		out = append(out, path+" -> "+target)
		return nil
	})
	require.NoError(t, err)
	return out
}

const echoSocket = `[Socket]
ListenStream=/run/echo.sock
Accept=yes

[Install]
WantedBy=sockets.target
`

const echoService = `[Service]
ExecStart=/bin/cat
StandardInput=socket
`

func TestEnableNowStaysInTheBox(t *testing.T) {
	t.Parallel()
	before := snapshot(t, "/etc/systemd/system")
	box := sdbox.New(t, sdbox.Options{Units: map[string]string{
		"echo.socket":   echoSocket,
		"echo@.service": echoService,
	}})

	run(t, box, "systemctl", "enable", "--now", "echo.socket")
	assert.Equal(t, "enabled", run(t, box, "systemctl", "is-enabled", "echo.socket"))
	assert.Equal(t, "active", run(t, box, "systemctl", "is-active", "echo.socket"))
	_, err := os.Lstat(box.Path("/etc/systemd/system/sockets.target.wants/echo.socket"))
	assert.NoError(t, err, "the enable symlink inside the box")
	assert.Equal(t, before, snapshot(t, "/etc/systemd/system"), "the host's /etc/systemd/system")

	// The socket systemd listens on inside is reachable from the host.
	conn, err := net.Dial("unix", box.Path("/run/echo.sock"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("ping\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "ping\n", line, "echoed by echo@.service, activated by systemd")
}

func TestWriteFileInstallsAUnit(t *testing.T) {
	t.Parallel()
	box := sdbox.New(t, sdbox.Options{})

	unit := "[Service]\nType=oneshot\nExecStart=/bin/touch /run/wrote-ran\n"
	require.NoError(t, box.WriteFile("/etc/systemd/system/wrote.service", []byte(unit), 0o644))
	run(t, box, "systemctl", "daemon-reload")
	run(t, box, "systemctl", "start", "wrote.service")
	_, err := os.Stat(box.Path("/run/wrote-ran"))
	assert.NoError(t, err, "the unit ran inside")
	_, err = os.Lstat("/etc/systemd/system/wrote.service")
	assert.ErrorIs(t, err, fs.ErrNotExist, "the host's /etc/systemd/system")

	err = box.WriteFile("/usr/bin/sdbox-must-not-exist", []byte("x"), 0o755)
	assert.ErrorContains(t, err, "not under a private mount")
	_, err = os.Lstat("/usr/bin/sdbox-must-not-exist")
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestTmpfsOverlayAndBinds(t *testing.T) {
	t.Parallel()
	sdbox.RequireRoot(t)
	// Names of this test's own, so that it also runs where the product is
	// installed (/etc/virtiofsd exists there).
	for _, p := range []string{"/etc/sdbox-test", "/usr/libexec/sdbox-test", "/opt/sdbox-test"} {
		_, err := os.Lstat(p)
		require.ErrorIs(t, err, fs.ErrNotExist, "this test needs %s absent on the host", p)
	}
	bin := filepath.Join(t.TempDir(), "hello") // under /tmp, which the box mounts over
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho hello $1\n"), 0o755))
	share, err := os.MkdirTemp("/var/tmp", "sdbox-test-share-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(share) })

	box := sdbox.New(t, sdbox.Options{
		Tmpfs:   []string{"/etc/sdbox-test"},
		Overlay: []string{"/opt"},
		Binds: map[string]string{
			bin:   "/usr/libexec/sdbox-test/hello",
			share: "/srv/sdbox-test-share",
		},
	})

	assert.Equal(t, "hello box", run(t, box, "/usr/libexec/sdbox-test/hello", "box"))
	require.NoError(t, box.WriteFile("/etc/sdbox-test/vm1.conf", []byte("SHARED_DIR=/srv\n"), 0o600))
	assert.Equal(t, "SHARED_DIR=/srv", run(t, box, "cat", "/etc/sdbox-test/vm1.conf"))
	require.NoError(t, box.WriteFile("/opt/sdbox-test/x", []byte("x"), 0o644))
	run(t, box, "sh", "-c", "echo from-inside >/srv/sdbox-test-share/f")
	got, err := os.ReadFile(filepath.Join(share, "f"))
	require.NoError(t, err)
	assert.Equal(t, "from-inside\n", string(got), "a bound directory is shared with the host")

	for _, p := range []string{"/etc/sdbox-test", "/usr/libexec/sdbox-test", "/opt/sdbox-test", "/srv/sdbox-test-share"} {
		_, err := os.Lstat(p)
		assert.ErrorIs(t, err, fs.ErrNotExist, "%s on the host", p)
	}
}

func TestBoxesSideBySide(t *testing.T) {
	t.Parallel()
	sdbox.RequireRoot(t)
	const n = 3
	boxes := make([]*sdbox.Box, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			boxes[i], errs[i] = sdbox.Boot(t.Context(), sdbox.Options{
				Name:  fmt.Sprintf("box%d", i),
				Units: map[string]string{"sleeper.service": sleeper},
			})
		})
	}
	wg.Wait()
	for i, b := range boxes {
		if b != nil {
			t.Cleanup(func() { assert.NoError(t, b.Close()) })
		}
		require.NoError(t, errs[i], "box %d", i)
	}

	pids := map[int]bool{}
	for _, b := range boxes {
		run(t, b, "systemctl", "start", "sleeper.service")
		pids[b.PID()] = true
	}
	assert.Len(t, pids, n, "one systemd each")
	run(t, boxes[0], "systemctl", "stop", "sleeper.service")
	assert.Equal(t, "active", run(t, boxes[1], "systemctl", "is-active", "sleeper.service"),
		"stopping a unit in one box leaves the same unit in another alone")
	require.NoError(t, boxes[0].WriteFile("/run/marker", nil, 0o644))
	_, err := os.Stat(boxes[1].Path("/run/marker"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "each box has its own /run")
}

func TestCloseLeavesNothing(t *testing.T) {
	sdbox.RequireRoot(t)
	box, err := sdbox.Boot(t.Context(), sdbox.Options{Units: map[string]string{"sleeper.service": sleeper}})
	require.NoError(t, err)
	run(t, box, "systemctl", "start", "sleeper.service")
	procs := box.Processes()
	require.Greater(t, len(procs), 2)
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", box.PID()))
	require.NoError(t, err)
	var cgdirs []string
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && strings.Contains(f[2], "/sdbox/") {
			hier := strings.TrimPrefix(f[1], "name=")
			if hier == "" {
				hier = "unified"
			}
			cgdirs = append(cgdirs, filepath.Join("/sys/fs/cgroup", hier, filepath.Dir(f[2])))
		}
	}
	require.NotEmpty(t, cgdirs)

	require.NoError(t, box.Close())
	for _, pid := range procs {
		assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "pid %d of the box", pid)
	}
	assert.Empty(t, box.Processes())
	for _, d := range cgdirs {
		_, err := os.Stat(d)
		assert.ErrorIs(t, err, fs.ErrNotExist, "the box's cgroup %s", d)
	}
	assert.NoError(t, box.Close(), "a second Close")
}

func TestDBusInsideTheBox(t *testing.T) {
	t.Parallel()
	box := sdbox.New(t, sdbox.Options{})

	// Through the system bus (dbus-daemon, socket-activated).
	out := run(t, box, "busctl", "--system", "get-property", "org.freedesktop.systemd1",
		"/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "Version")
	assert.Regexp(t, `^s "252`, out)
	// Through systemd's private socket.
	assert.Regexp(t, `^252`, run(t, box, "systemctl", "show", "-p", "Version", "--value"))
}

// TestGoSystemdReachesTheBoxFromTheHost is how a test of a D-Bus client (the
// list command) talks to the box's systemd without entering the box.
func TestGoSystemdReachesTheBoxFromTheHost(t *testing.T) {
	t.Parallel()
	box := sdbox.New(t, sdbox.Options{Units: map[string]string{"sleeper.service": sleeper}})
	run(t, box, "systemctl", "start", "sleeper.service")

	conn, err := sddbus.NewConnection(box.SystemdBus)
	require.NoError(t, err)
	defer conn.Close()
	version, err := conn.GetManagerProperty("Version")
	require.NoError(t, err)
	assert.Contains(t, version, "252")
	units, err := conn.ListUnitsByNamesContext(t.Context(), []string{"sleeper.service", "sdbox.target"})
	require.NoError(t, err)
	require.Len(t, units, 2)
	for _, u := range units {
		assert.Equal(t, "active", u.ActiveState, u.Name)
	}

	t.Run("not by dialing Path", func(t *testing.T) {
		path := box.Path("/run/systemd/private")
		require.Less(t, len(path), 108, "unix socket address %s", path)
		_, err := sddbus.NewConnection(func() (*dbus.Conn, error) {
			c, err := dbus.Dial("unix:path=" + path)
			if err != nil {
				return nil, err
			}
			if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
				return nil, errors.Join(err, c.Close())
			}
			return c, nil
		})
		assert.Error(t, err, "systemd drops a peer outside its pid namespace")
	})
}

func TestBootRejectsBadOptions(t *testing.T) {
	for name, o := range map[string]sdbox.Options{
		"unit outside /run/systemd/system": {Units: map[string]string{"../x.service": ""}},
		"unit named like the box's target": {Units: map[string]string{"sdbox.target": ""}},
		"relative overlay":                 {Overlay: []string{"etc"}},
		"missing overlay":                  {Overlay: []string{"/sdbox-no-such-dir"}},
		"tmpfs needing an overlay of /":    {Tmpfs: []string{"/sdbox-no-such-dir/x"}},
		"missing bind source":              {Binds: map[string]string{"/sdbox-no-such-file": "/usr/bin/x"}},
		"relative root":                    {Root: "var/cache"},
		"root without systemd":             {Root: "/var/empty-sdbox-no-such-tree"},
	} {
		t.Run(name, func(t *testing.T) {
			box, err := sdbox.Boot(t.Context(), o)
			assert.Error(t, err)
			assert.Nil(t, box)
		})
	}
}

func TestBootFailureCarriesTheConsole(t *testing.T) {
	sdbox.RequireRoot(t)
	// overlayfs refuses /proc as a lower layer: the box's setup fails.
	box, err := sdbox.Boot(t.Context(), sdbox.Options{Overlay: []string{"/proc/sys"}})
	assert.Nil(t, box)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited during boot")
	assert.Contains(t, err.Error(), "mount", "the console tail says what failed")
}

// BenchmarkBootAndClose measures a box's whole life: boot to running, Close.
func BenchmarkBootAndClose(b *testing.B) {
	sdbox.RequireRoot(b)
	for b.Loop() {
		box, err := sdbox.Boot(b.Context(), sdbox.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := box.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// debian13 returns the Debian 13 tree (built once per machine), failing the
// test when it cannot be built: as root that is a missing install step.
func debian13(t *testing.T) *distro.Tree {
	t.Helper()
	sdbox.RequireRoot(t)
	tree, err := distro.Debian13(t.Context())
	require.NoError(t, err, "build the Debian 13 tree (scripts/deps.sh installs mmdebstrap)")
	return tree
}

func TestBootsADistributionTree(t *testing.T) {
	t.Parallel()
	tree := debian13(t)
	share, err := os.MkdirTemp("/var/tmp", "sdbox-test-share-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(share) })
	before := snapshot(t, filepath.Join(tree.Root, "etc"))

	box := sdbox.New(t, sdbox.Options{
		Root:  tree.Root,
		Units: map[string]string{"sleeper.service": sleeper},
		Tmpfs: []string{"/etc/virtiofsd"},
		Binds: map[string]string{share: share},
	})

	out, err := box.Run(t.Context(), "systemctl", "is-system-running")
	assert.NoError(t, err, "failed units: %s", run(t, box, "systemctl", "--failed", "--no-pager"))
	assert.Equal(t, "running", strings.TrimSpace(out))
	assert.Regexp(t, `^257`, run(t, box, "systemctl", "show", "-p", "Version", "--value"), "the tree's systemd")
	assert.Contains(t, run(t, box, "cat", "/etc/os-release"), `VERSION_ID="13"`)
	run(t, box, "systemctl", "start", "sleeper.service")
	assert.Eventually(t, func() bool {
		out, _ := box.Run(t.Context(), "journalctl", "-u", "sleeper.service", "-o", "cat", "--no-pager")
		return strings.Contains(out, "sleeper says hello")
	}, 5*time.Second, 50*time.Millisecond, "the sleeper's line in the box's journal")

	// Writes anywhere stay in the box; a bound host directory is shared.
	run(t, box, "sh", "-c", "echo x >/etc/sdbox-test && echo x >/usr/sdbox-test && echo from-inside >"+share+"/f")
	require.NoError(t, box.WriteFile("/etc/virtiofsd/vm1.conf", []byte("SHARED_DIR=/srv\n"), 0o600))
	got, err := os.ReadFile(filepath.Join(share, "f"))
	require.NoError(t, err)
	assert.Equal(t, "from-inside\n", string(got))
	for _, p := range []string{"/etc/sdbox-test", "/usr/sdbox-test", "/etc/virtiofsd"} {
		_, err := os.Lstat(filepath.Join(tree.Root, p))
		assert.ErrorIs(t, err, fs.ErrNotExist, "%s in the cached tree", p)
	}
	assert.Equal(t, before, snapshot(t, filepath.Join(tree.Root, "etc")), "the cached tree's /etc")
	_, err = box.Run(t.Context(), "sh", "-c", "echo x >/sys/sdbox-test")
	assert.Error(t, err, "/sys is read-only")
}
