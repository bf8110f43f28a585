package guest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// requireGuest skips, saying why, unless this host can boot the guest.
func requireGuest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (make unit): skips the levels that boot a guest")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: virtiofsd sets up a namespace sandbox and /boot/vmlinuz-* is readable by root only")
	}
	for _, bin := range []string{"qemu-system-x86_64", virtiofsd.CVirtiofsd} {
		if _, err := exec.LookPath(bin); err != nil {
			// As root this is a missing install step, not a reason to skip.
			t.Fatalf("%s not installed: run make test (scripts/deps.sh), or apt-get install qemu-system-x86 qemu-system-common: %v", bin, err)
		}
	}
}

func prepareImage(t *testing.T) *Image {
	t.Helper()
	img, err := Prepare(context.Background(), "")
	require.NoError(t, err)
	return img
}

// shortTempDir returns a fresh directory under /tmp whose path is short
// enough for unix sockets, and checks at the end of the test that no process
// started with a path inside it is still running.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "g")
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.Empty(t, processesMentioning(dir), "processes left running after the test")
		os.RemoveAll(dir)
	})
	return dir
}

// processesMentioning lists the processes whose command line contains s.
func processesMentioning(s string) []string {
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		out = append(out, filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

// cVirtiofsd is a C virtiofsd started by a test, reaped by the test's cleanup.
type cVirtiofsd struct {
	socket string
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, set before exited is closed

	mu    sync.Mutex
	lines []string
}

func (v *cVirtiofsd) stderr() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.lines, "\n")
}

// startVirtiofsd serves dir on socket. With activated, the socket is made by
// systemd-socket-activate and passed as fd 3 (--fd=3), as the product does;
// virtiofsd itself then starts on the first connection. It returns once the
// socket accepts connections.
func startVirtiofsd(t *testing.T, dir, socket string, activated bool) *cVirtiofsd {
	t.Helper()
	args := []string{virtiofsd.CVirtiofsd, "--socket-path=" + socket, "-o", "source=" + dir, "-o", "cache=auto"}
	ready := "Waiting for vhost-user socket connection"
	if activated {
		sa, err := exec.LookPath("systemd-socket-activate")
		if err != nil {
			t.Skipf("systemd-socket-activate not installed (apt-get install systemd): %v", err)
		}
		args = []string{sa, "-l", socket, virtiofsd.CVirtiofsd, "--fd=3", "-o", "source=" + dir, "-o", "cache=auto"}
		ready = "Listening on " + socket
	}
	cmd := exec.Command(args[0], args[1:]...)
	// Dies with the test binary even if the cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pipe, err := cmd.StderrPipe()
	require.NoError(t, err)

	v := &cVirtiofsd{socket: socket, exited: make(chan struct{})}
	readyc := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the forking thread (golang/go#27505).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		sc := bufio.NewScanner(pipe)
		once := sync.Once{}
		for sc.Scan() {
			v.mu.Lock()
			v.lines = append(v.lines, sc.Text())
			v.mu.Unlock()
			if strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(readyc) })
			}
		}
		v.err = cmd.Wait()
		close(v.exited)
	}()
	require.NoError(t, <-started, "start %v", args)
	t.Cleanup(func() {
		select {
		case <-v.exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-v.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-v.exited
		}
	})
	select {
	case <-readyc:
	case <-v.exited:
		t.Fatalf("%v exited before it was ready: %v\n%s", args, v.err, v.stderr())
	case <-time.After(10 * time.Second):
		t.Fatalf("%v not ready after 10s (no %q line)\n%s", args, ready, v.stderr())
	}
	return v
}

// waitExit waits for virtiofsd to end by itself, as it does when its guest
// disconnects, and returns its exit error.
func (v *cVirtiofsd) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case <-v.exited:
		return v.err
	case <-time.After(10 * time.Second):
		t.Fatalf("virtiofsd on %s still running 10s after its guest powered off\n%s", v.socket, v.stderr())
		return nil
	}
}

func run(t *testing.T, img *Image, spec Spec) *Result {
	t.Helper()
	if spec.Timeout == 0 {
		spec.Timeout = 60 * time.Second
	}
	res, err := Run(context.Background(), img, spec)
	require.NoError(t, err)
	t.Logf("guest ran in %s", res.Duration)
	return res
}

func TestGuestReadsAndWritesShare(t *testing.T) {
	requireGuest(t)
	img := prepareImage(t)
	for _, tc := range []struct {
		name      string
		activated bool
	}{
		{"socket-path", false},
		{"socket-activated", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := shortTempDir(t)
			share := filepath.Join(tmp, "share")
			require.NoError(t, os.Mkdir(share, 0o755))
			hello := "hello " + rand.Text()
			require.NoError(t, os.WriteFile(filepath.Join(share, "from-host"), []byte(hello), 0o644))
			vfs := startVirtiofsd(t, share, filepath.Join(tmp, "vfs.sock"), tc.activated)

			res := run(t, img, Spec{
				Shares: []Share{{Tag: "data", Socket: vfs.socket}},
				Script: `set -e
mount -t virtiofs data /mnt/data
echo "RESULT hello=$(cat /mnt/data/from-host)"
echo "written by the guest" > /mnt/data/from-guest
dd if=/dev/urandom of=/mnt/data/big bs=1M count=16 2>/dev/null
echo "RESULT sha256=$(sha256sum /mnt/data/big | cut -d' ' -f1)"
umount /mnt/data
`,
			})

			assert.Equal(t, 0, res.ExitStatus, res.Serial)
			assert.Equal(t, hello, res.Values["hello"])
			got, err := os.ReadFile(filepath.Join(share, "from-guest"))
			require.NoError(t, err)
			assert.Equal(t, "written by the guest\n", string(got))
			big, err := os.ReadFile(filepath.Join(share, "big"))
			require.NoError(t, err)
			assert.Len(t, big, 16<<20)
			sum := sha256.Sum256(big)
			assert.Equal(t, hex.EncodeToString(sum[:]), res.Values["sha256"])

			// The guest's power-off ends virtiofsd's only session: exit 0.
			assert.NoError(t, vfs.waitExit(t), vfs.stderr())
			assert.Contains(t, vfs.stderr(), "Received vhost-user socket connection")
		})
	}
}

func TestGuestSharesSeeOnlyTheirOwnDirectory(t *testing.T) {
	requireGuest(t)
	img := prepareImage(t)
	tmp := shortTempDir(t)
	var shares []Share
	for _, tag := range []string{"one", "two"} {
		dir := filepath.Join(tmp, tag)
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "only-in-"+tag), nil, 0o644))
		vfs := startVirtiofsd(t, dir, filepath.Join(tmp, tag+".sock"), tag == "two")
		shares = append(shares, Share{Tag: tag, Socket: vfs.socket})
	}

	res := run(t, img, Spec{
		Shares: shares,
		Script: `set -e
mount -t virtiofs one /mnt/one
mount -t virtiofs two /mnt/two
echo "RESULT one=$(ls /mnt/one | tr '\n' ' ')"
echo "RESULT two=$(ls /mnt/two | tr '\n' ' ')"
echo 1 > /mnt/one/written-to-one
echo "RESULT two-after=$(ls /mnt/two | tr '\n' ' ')"
umount /mnt/one /mnt/two
`,
	})

	assert.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "only-in-one ", res.Values["one"])
	assert.Equal(t, "only-in-two ", res.Values["two"])
	assert.Equal(t, "only-in-two ", res.Values["two-after"])
	assert.FileExists(t, filepath.Join(tmp, "one", "written-to-one"))
	assert.NoFileExists(t, filepath.Join(tmp, "two", "written-to-one"))
}

func TestRunReportsScriptExitStatusAndValues(t *testing.T) {
	requireGuest(t)
	img := prepareImage(t)
	var console strings.Builder
	res := run(t, img, Spec{
		Script:  "echo 'RESULT greeting=hello world'\necho RESULT empty=\nexit 3\n",
		Console: &console,
	})
	assert.Equal(t, 3, res.ExitStatus)
	assert.Equal(t, map[string]string{"greeting": "hello world", "empty": ""}, res.Values)
	assert.Equal(t, res.Serial, console.String(), "Console gets a copy of the serial output")
}

func TestRunKillsGuestThatOutlivesTimeout(t *testing.T) {
	requireGuest(t)
	img := prepareImage(t)
	// Run's per-boot files, named on QEMU's command line, land in TMPDIR:
	// shortTempDir's cleanup then checks that this QEMU is gone.
	t.Setenv("TMPDIR", shortTempDir(t))
	marker := "still-running-" + rand.Text()
	start := time.Now()
	res, err := Run(context.Background(), img, Spec{
		Script:  "echo " + marker + "\nsleep 600\n",
		Timeout: 10 * time.Second,
	})
	require.Error(t, err)
	assert.Less(t, time.Since(start), 20*time.Second)
	assert.Contains(t, err.Error(), "did not power off within 10s")
	assert.Contains(t, err.Error(), marker, "the error shows the serial tail")
	require.NotNil(t, res)
	assert.Equal(t, -1, res.ExitStatus)
	assert.Empty(t, processesMentioning(os.Getenv("TMPDIR")), "qemu still running after Run returned")
}

func TestRunReportsInitFailure(t *testing.T) {
	requireGuest(t)
	img := prepareImage(t)
	// A script that powers off by itself never reports its exit status.
	_, err := Run(context.Background(), img, Spec{Script: "poweroff -f\n", Timeout: 60 * time.Second})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "powered off before the script finished")
}

func TestRunRejectsBadSpecs(t *testing.T) {
	tmp := t.TempDir()
	notSocket := filepath.Join(tmp, "file")
	require.NoError(t, os.WriteFile(notSocket, nil, 0o644))
	long := "/" + strings.Repeat("x", 120)
	img := &Image{Kernel: "/nonexistent", Initramfs: "/nonexistent"}
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no script", Spec{}, "empty Script"},
		{"bad tag", Spec{Script: "true", Shares: []Share{{Tag: "a b", Socket: notSocket}}}, `tag "a b"`},
		{"long tag", Spec{Script: "true", Shares: []Share{{Tag: strings.Repeat("t", 37), Socket: notSocket}}}, "1-36"},
		{"twice", Spec{Script: "true", Shares: []Share{{Tag: "a", Socket: notSocket}, {Tag: "a", Socket: notSocket}}}, "used twice"},
		{"long socket", Spec{Script: "true", Shares: []Share{{Tag: "a", Socket: long}}}, "shorter directory"},
		{"missing socket", Spec{Script: "true", Shares: []Share{{Tag: "a", Socket: filepath.Join(tmp, "nope")}}}, "start virtiofsd first"},
		{"not a socket", Spec{Script: "true", Shares: []Share{{Tag: "a", Socket: notSocket}}}, "is not a socket"},
		{"absolute file", Spec{Script: "true", Files: map[string][]byte{"/bin/x": nil}}, "clean relative path"},
		{"file above", Spec{Script: "true", Files: map[string][]byte{"../x": nil}}, "clean relative path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), img, tc.spec)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct {
		name   string
		serial string
		status int
		values map[string]string
	}{
		{
			name:   "firmware noise before the start marker",
			serial: "\x1bc\x1b[2JBooting from ROM..\x1bc\x1b[2J\r\nRESULT early=ignored\r\n" + markerStart + "\r\nRESULT a=1\r\nRESULT b=x=y\r\n" + markerExit + "0\r\n[    1.5] reboot: Power down\r\n",
			status: 0,
			values: map[string]string{"a": "1", "b": "x=y"},
		},
		{
			name:   "start marker glued to escape codes",
			serial: "Booting from ROM..\x1bc\x1b[?7l\x1b[2J" + markerStart + "\nRESULT k=v\n" + markerExit + "42\n",
			status: 42,
			values: map[string]string{"k": "v"},
		},
		{
			name:   "later key wins, malformed lines skipped",
			serial: markerStart + "\nRESULT k=1\nRESULT k=2\nRESULT novalue\nRESULT =x\n",
			status: -1,
			values: map[string]string{"k": "2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := parseSerial(tc.serial)
			assert.Equal(t, tc.status, res.ExitStatus)
			assert.Equal(t, tc.values, res.Values)
		})
	}
}

func TestQEMUArgsEscapeCommasInSocketPaths(t *testing.T) {
	args := strings.Join(qemuArgs("/k", "/i", []Share{{Tag: "a", Socket: "/tmp/x,y.sock"}}), " ")
	assert.Contains(t, args, "socket,id=char0,path=/tmp/x,,y.sock")
	assert.Contains(t, args, "vhost-user-fs-pci,chardev=char0,tag=a")
	assert.Contains(t, args, "memory-backend-memfd,id=mem,size=512M,share=on")
}
