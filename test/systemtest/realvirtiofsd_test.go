package systemtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/syncbuf"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// eachRealFlavor runs f for the real C and the real Rust virtiofsd, as
// root: their namespace sandboxes need it, and so does building the tree
// that brings the Rust one.
func eachRealFlavor(t *testing.T, f func(t *testing.T, fl virtiofsd.Flavor, bin string)) {
	for _, fl := range []virtiofsd.Flavor{virtiofsd.C, virtiofsd.Rust} {
		t.Run(fl.String(), func(t *testing.T) {
			sdbox.RequireRoot(t)
			f(t, fl, fakevirtiofsd.Real(t, fl))
		})
	}
}

// activated starts the built shim the way systemd does (vhostuser.Activated),
// with NOTIFY_SOCKET a datagram socket the test reads.
func activated(t *testing.T, args ...string) (cmd *exec.Cmd, sock string, notify <-chan vhostuser.Datagram, stderr *syncbuf.Buffer) {
	t.Helper()
	cmd, sock, notify, stderr, _ = activatedWith(t, false, args...)
	return cmd, sock, notify, stderr
}

// activatedWith is activated; withVM connects a VM that asks for the
// features (GET_FEATURES) before the shim starts, as QEMU does when its
// connection starts the service, and returns its connection.
func activatedWith(t *testing.T, withVM bool, args ...string) (cmd *exec.Cmd, sock string, notify <-chan vhostuser.Datagram, stderr *syncbuf.Buffer, vm net.Conn) {
	t.Helper()
	sdbox.RequireRoot(t) // the virtiofsds' namespace sandboxes need root
	bin, err := shimbox.Binary()
	require.NoError(t, err)
	dir := testdir.Short(t)

	sock = filepath.Join(dir, "vm1.sock")
	lf, err := vhostuser.Listen(sock)
	require.NoError(t, err)
	defer lf.Close()
	ns, err := vhostuser.ListenNotify(filepath.Join(dir, "notify"))
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })

	if len(args) > 0 && args[0] == "run" {
		// An instance, so that the shim publishes its typed state in
		// RUNTIME_DIRECTORY (as under systemd, with dir as %t):
		// shimstate.Path(dir, "vm1").
		args = append([]string{"run", "--instance=vm1", "--config-dir=" + dir}, args[1:]...)
	}
	if withVM {
		vm, err = net.Dial("unix", sock)
		require.NoError(t, err)
		t.Cleanup(func() { vm.Close() })
		getFeatures := []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0} // request 1, flags: version 1, size 0
		_, err = vm.Write(getFeatures)
		require.NoError(t, err)
	}
	cmd = vhostuser.Activated(lf, bin, args...)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.Path, "RUNTIME_DIRECTORY="+shimstate.Dir(dir))
	stderr = &syncbuf.Buffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, sock, ns.C, stderr, vm
}

func nextState(t *testing.T, ch <-chan vhostuser.Datagram) string {
	t.Helper()
	select {
	case d := <-ch:
		return d.State
	case <-time.After(15 * time.Second):
		t.Fatal("no sd_notify datagram within 15s")
		return ""
	}
}

// virtiofsdFor lists virtiofsd processes serving dir (-o source=DIR for
// the C one, --shared-dir=DIR for the Rust one).
func virtiofsdFor(dir string) []string {
	out, _ := exec.Command("pgrep", "-f", "virtiofsd.*(source|shared-dir)="+dir).Output()
	return strings.Fields(string(out))
}

func TestRealVirtiofsdServesTheSystemdSocketAndEndsCleanly(t *testing.T) {
	eachRealFlavor(t, func(t *testing.T, fl virtiofsd.Flavor, bin string) {
		share := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(share, "hello"), []byte("hi\n"), 0o644))
		cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin)

		assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Starting virtiofsd"))
		ready := nextState(t, notify)
		require.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=Waiting for a vhost-user client on "+sock+", sharing "+share),
			"READY=1 arrives before any client connects: %q\nshim stderr:\n%s", ready, stderr)

		c, err := vhostuser.Probe(sock, 10*time.Second)
		require.NoError(t, err, "a GET_FEATURES reply from the real virtiofsd")
		assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Serving a vhost-user client on "+sock))
		c.Close() // the VM hangs up
		// A hang-up line can be forged by a guest's file name: it changes
		// no state; virtiofsd's exit ends the session.
		assert.Equal(t, 0, exitOf(t, cmd, stderr), "the shim exits 0 when the VM disconnects\n%s", stderr)
		assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
		want := map[virtiofsd.Flavor][]string{
			virtiofsd.C: {"virtio_session_mount: Waiting for vhost-user socket connection...",
				"virtio_session_mount: Received vhost-user socket connection", "virtio_loop: Exit"},
			virtiofsd.Rust: {"Waiting for vhost-user socket connection...",
				"Client connected, servicing requests", "Client disconnected, shutting down"},
		}[fl]
		for _, l := range want {
			assert.Contains(t, stderr.String(), l)
		}
	})
}

// virtiofsd's own failure at start is passed on with its status: 1 from
// the C one's option parser, 2 from the Rust one's.
func TestRealVirtiofsdFailureIsPassedOn(t *testing.T) {
	eachRealFlavor(t, func(t *testing.T, fl virtiofsd.Flavor, bin string) {
		share := t.TempDir()
		bad := map[virtiofsd.Flavor][]string{virtiofsd.C: {"-o", "no_such_option"}, virtiofsd.Rust: {"--no-such-option"}}[fl]
		cmd, _, notify, stderr := activated(t, append([]string{"run", "--shared-dir=" + share, "--virtiofsd=" + bin, "--"}, bad...)...)
		nextState(t, notify)
		assert.Equal(t, map[virtiofsd.Flavor]int{virtiofsd.C: 1, virtiofsd.Rust: 2}[fl], exitOf(t, cmd, stderr), "virtiofsd's own exit status")
		assert.Contains(t, stderr.String(), "before it was ready")
		assert.Contains(t, stderr.String(), map[virtiofsd.Flavor]string{
			virtiofsd.C: "fuse: unknown option(s): `-o no_such_option'", virtiofsd.Rust: "error: unexpected argument '--no-such-option' found"}[fl])
		select {
		case d := <-notify:
			assert.NotContains(t, d.State, "READY=1")
		default:
		}
	})
}

// TestRealVirtiofsdAnswersAVMThatConnectedBeforeItWasReady: the front
// accepts a VM queued on the socket at once; its GET_FEATURES waits for
// virtiofsd in the private socket and is answered, and systemd hears
// READY=1 and then that the VM is served.
func TestRealVirtiofsdAnswersAVMThatConnectedBeforeItWasReady(t *testing.T) {
	sdbox.RequireRoot(t)
	bin := fakevirtiofsd.Real(t, virtiofsd.Rust)
	share := t.TempDir()
	cmd, sock, notify, stderr, vm := activatedWith(t, true, "run", "--shared-dir="+share, "--virtiofsd="+bin)
	require.NoError(t, vm.SetReadDeadline(time.Now().Add(15*time.Second)))
	reply := make([]byte, 20) // header and a u64
	_, err := io.ReadFull(vm, reply)
	require.NoError(t, err, "the GET_FEATURES reply\n%s", stderr)
	assert.Equal(t, []byte{1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0}, reply[:12], "GET_FEATURES, a reply of version 1, 8 bytes")
	assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Starting virtiofsd"))
	// READY=1 says the VM is served when the shim accepted it before
	// virtiofsd was ready (as under systemd); when it accepted it just
	// after, a STATUS= says so next.
	ready := nextState(t, notify)
	require.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS="), ready)
	if !strings.HasPrefix(ready, "READY=1\nSTATUS=Serving a vhost-user client on "+sock) {
		assert.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=Waiting for a vhost-user client on "+sock), ready)
		assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Serving a vhost-user client on "+sock), "served, after READY=1")
	}
	// Once: whether the shim accepted the VM before virtiofsd was ready
	// (as under systemd) or after.
	select {
	case d := <-notify:
		assert.False(t, strings.HasPrefix(d.State, "STATUS=Serving"), "served said twice")
	case <-time.After(100 * time.Millisecond):
	}
	st, err := shimstate.Read(shimstate.Path(filepath.Dir(sock), "vm1"))
	require.NoError(t, err)
	assert.Equal(t, shimstate.Serving, st.Phase)
	vm.Close()
	assert.Equal(t, 0, exitOf(t, cmd, stderr), "the shim exits 0 when the VM disconnects\n%s", stderr)
	assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
}

// TestRealVirtiofsdFailureWithTheVMConnectedClosesItsConnection: the
// front accepts the VM at once, before virtiofsd is ready, so that its
// first request waits for virtiofsd in the private socket. A virtiofsd
// that fails before it is ready fails the session as without a VM (its own
// status, no fresh virtiofsd tried), and the VM's connection is closed,
// unanswered: QEMU's device setup fails, where a connection left queued
// would drive the socket into its start limit.
func TestRealVirtiofsdFailureWithTheVMConnectedClosesItsConnection(t *testing.T) {
	sdbox.RequireRoot(t)
	bin := fakevirtiofsd.Real(t, virtiofsd.Rust)
	share := t.TempDir()
	cmd, sock, notify, stderr, vm := activatedWith(t, true, "run", "--shared-dir="+share, "--virtiofsd="+bin, "--", "--no-such-option")
	nextState(t, notify)
	assert.Equal(t, 2, exitOf(t, cmd, stderr), "virtiofsd's own exit status\n%s", stderr)
	assert.Contains(t, stderr.String(), "with the VM already connected: the VM's connection is closed")
	assert.Contains(t, stderr.String(), "error: unexpected argument '--no-such-option' found")
	assert.Equal(t, 1, strings.Count(stderr.String(), `msg="started virtiofsd"`), "one virtiofsd, not a fresh one after it\n%s", stderr)
	assert.NotContains(t, stderr.String(), "cannot be recovered", "no crash recovery is tried")
	require.NoError(t, vm.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := vm.Read(make([]byte, 64))
	assert.Zero(t, n, "no reply")
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the VM's connection is closed: %v", err)
	assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
	left, _ := filepath.Glob(filepath.Join(shimstate.Dir(filepath.Dir(sock)), "front-*"))
	assert.Empty(t, left, "no private socket left")
}

// exitOf waits for the shim and returns its exit status (-1: killed).
func exitOf(t *testing.T, cmd *exec.Cmd, stderr *syncbuf.Buffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait for the shim: %v", err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("the shim did not exit within 30 s\n%s", stderr)
		return 0
	}
}

// startingPid reads the shim's first datagram, and returns virtiofsd's pid
// from the typed state the shim published before it (next to sock).
func startingPid(t *testing.T, notify <-chan vhostuser.Datagram, sock string) int {
	t.Helper()
	dg := nextState(t, notify)
	require.True(t, strings.HasPrefix(dg, "STATUS=Starting "), dg)
	st, err := shimstate.Read(shimstate.Path(filepath.Dir(sock), "vm1"))
	require.NoError(t, err)
	require.NotNil(t, st, "the shim published its state")
	require.NotZero(t, st.VirtiofsdPID, "the state names virtiofsd's pid: %+v", st)
	return st.VirtiofsdPID
}

// stopBeforeReadiness freezes virtiofsd (SIGSTOP) as soon as it runs the
// virtiofsd program (the Rust wrapper execs it), stops the shim, then lets
// virtiofsd go on with the SIGTERM pending. It reports false when
// virtiofsd printed its readiness line before it was frozen (the test then
// tries again): the stop must begin in the starting phase.
func stopBeforeReadiness(t *testing.T, cmd *exec.Cmd, notify <-chan vhostuser.Datagram, sock string, stderr *syncbuf.Buffer) bool {
	t.Helper()
	pid := startingPid(t, notify, sock)
	shell, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		require.NoError(t, err, "virtiofsd (pid %d) ended before the stop\n%s", pid, stderr)
		if exe != shell && !strings.HasSuffix(exe, "/dash") && !strings.HasSuffix(exe, "/sh") {
			break
		}
	}
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	defer syscall.Kill(pid, syscall.SIGCONT)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM)) // systemctl stop
	st := nextState(t, notify)
	if strings.HasPrefix(st, "READY=1") {
		return false
	}
	require.True(t, strings.HasPrefix(st, "STOPPING=1"), "%q\n%s", st, stderr)
	return true
}

// A stop the admin asks for (systemctl stop: SIGTERM to the shim) is a
// clean stop, exit 0, whatever the real virtiofsd was doing: starting,
// waiting for the VM in accept(), or serving it.
func TestRealVirtiofsdStopIsCleanInEveryPhase(t *testing.T) {
	for _, phase := range []shimstate.Phase{shimstate.Starting, shimstate.Waiting, shimstate.Serving} {
		t.Run(string(phase), func(t *testing.T) {
			eachRealFlavor(t, func(t *testing.T, fl virtiofsd.Flavor, bin string) {
				for attempt := 1; ; attempt++ {
					share := t.TempDir()
					cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin)
					if phase == shimstate.Starting {
						if !stopBeforeReadiness(t, cmd, notify, sock, stderr) {
							require.Less(t, attempt, 5, "virtiofsd was ready before it could be frozen, 5 times")
							cmd.Process.Kill()
							cmd.Wait()
							continue
						}
					} else {
						startingPid(t, notify, sock)
						require.True(t, strings.HasPrefix(nextState(t, notify), "READY=1"), stderr.String())
						if phase == shimstate.Serving {
							c, err := vhostuser.Probe(sock, 10*time.Second)
							require.NoError(t, err, "a GET_FEATURES reply from the real virtiofsd")
							defer c.Close()
							assert.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Serving"))
						}
						require.NoError(t, cmd.Process.Signal(syscall.SIGTERM)) // systemctl stop
						assert.True(t, strings.HasPrefix(nextState(t, notify), "STOPPING=1"))
					}
					assert.Equal(t, 0, exitOf(t, cmd, stderr), "a stop is a clean stop\n%s", stderr)
					for _, l := range strings.Split(stderr.String(), "\n") {
						if strings.Contains(l, "virtiofsd ended") {
							t.Log(l) // how it ended, for the record
						}
					}
					assert.Contains(t, stderr.String(), "virtiofsd ended")
					assert.Empty(t, virtiofsdFor(share), "no virtiofsd left")
					return
				}
			})
		})
	}
}

// A virtiofsd that does not end on SIGTERM (here: frozen) is killed after
// the grace period, and that stop stays a failure: 137, with the cause.
func TestRealVirtiofsdStopThatNeedsSIGKILLIsAFailure(t *testing.T) {
	eachRealFlavor(t, func(t *testing.T, fl virtiofsd.Flavor, bin string) {
		share := t.TempDir()
		cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin, "--stop-timeout=1s")
		pid := startingPid(t, notify, sock)
		require.True(t, strings.HasPrefix(nextState(t, notify), "READY=1"), stderr.String())
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		assert.True(t, strings.HasPrefix(nextState(t, notify), "STOPPING=1"))
		assert.Equal(t, 137, exitOf(t, cmd, stderr), stderr.String())
		assert.Contains(t, stderr.String(), "did not stop within 1s of SIGTERM and was killed with SIGKILL")
		assert.Eventually(t, func() bool { return len(virtiofsdFor(share)) == 0 }, 10*time.Second, 50*time.Millisecond,
			"no virtiofsd left")
	})
}

// firstChild is the first child of a process that /proc/PID/task/*/children
// lists, or 0 while it has none.
func firstChild(pid int) int {
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, k := range kids {
		b, _ := os.ReadFile(k)
		if f := strings.Fields(string(b)); len(f) > 0 {
			child, _ := strconv.Atoi(f[0])
			return child
		}
	}
	return 0
}

// A stop that comes before virtiofsd runs (here: while the shim asks a slow
// binary for its --version to tell its flavor) ends the shim with 0 too,
// and leaves nothing behind.
func TestStopBeforeVirtiofsdStartsIsClean(t *testing.T) {
	dir := t.TempDir()
	slow := filepath.Join(dir, "slow-virtiofsd")
	require.NoError(t, os.WriteFile(slow, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755))
	cmd, _, notify, stderr := activated(t, "run", "--shared-dir="+dir, "--virtiofsd="+slow)

	var child int // the slow --version
	require.Eventually(t, func() bool {
		child = firstChild(cmd.Process.Pid)
		return child != 0
	}, 10*time.Second, 10*time.Millisecond, "the shim runs %s --version", slow)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, exitOf(t, cmd, stderr), stderr.String())
	assert.Contains(t, stderr.String(), "stopped before virtiofsd was started")
	select {
	case d := <-notify:
		t.Errorf("no sd_notify state is sent before virtiofsd starts, got %q", d.State)
	default:
	}
	assert.ErrorIs(t, syscall.Kill(child, 0), syscall.ESRCH, "the --version run (pid %d) is gone", child)
}

// When virtiofsd's sandboxed child, the process that serves the VM, is
// killed, each flavor's parent reports it its own way, and the shim passes
// that on as a failure: the C one exits 1; the Rust one says "Child process
// terminated by signal 9" and exits 256-9, which the shim reports as 137.
func TestRealVirtiofsdSandboxChildKilledIsAFailure(t *testing.T) {
	eachRealFlavor(t, func(t *testing.T, fl virtiofsd.Flavor, bin string) {
		share := t.TempDir()
		cmd, sock, notify, stderr := activated(t, "run", "--shared-dir="+share, "--virtiofsd="+bin)
		pid := startingPid(t, notify, sock)
		require.True(t, strings.HasPrefix(nextState(t, notify), "READY=1"), stderr.String())
		c, err := vhostuser.Probe(sock, 10*time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.True(t, strings.HasPrefix(nextState(t, notify), "STATUS=Serving"))

		var child int // the sandboxed child serving the connection
		require.Eventually(t, func() bool {
			child = firstChild(pid)
			return child != 0
		}, 10*time.Second, 10*time.Millisecond, "virtiofsd (pid %d) has its sandboxed child", pid)
		require.NoError(t, syscall.Kill(child, syscall.SIGKILL))

		want := map[virtiofsd.Flavor]int{virtiofsd.C: 1, virtiofsd.Rust: 137}[fl]
		assert.Equal(t, want, exitOf(t, cmd, stderr), stderr.String())
		if fl == virtiofsd.Rust {
			assert.Contains(t, stderr.String(), "Child process terminated by signal 9")
			assert.Contains(t, stderr.String(), "virtiofsd was killed by signal 9 (killed)")
		} else {
			assert.Contains(t, stderr.String(), "virtiofsd exited with status 1")
		}
		assert.Eventually(t, func() bool { return len(virtiofsdFor(share)) == 0 }, 10*time.Second, 50*time.Millisecond,
			"no virtiofsd left")
	})
}
