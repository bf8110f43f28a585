package systemtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/activation"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/fdstore"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/handover"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// peerEnv, set to a folder, makes the test binary a Type=notify service
// that keeps a connection to a peer (the test, listening on DIR/p.sock) in
// systemd's store, as the shim keeps the VM's (see peerHelper).
const peerEnv = "SYSTEMTEST_FDSTORE_PEER"

const peerUnit = "fdstore-peer.service"

// peerHelper reports to DIR/report what it found and did. At start: with
// a connection named "peer" in the store, it writes "hello from pid N" on
// it and reports "kept"; without, it connects to DIR/p.sock, stores the
// connection and reports "stored". On SIGTERM it asks systemd, as the shim
// does (handover.IsRestart), for its unit's job, and reports "sigterm
// job=TYPE" and what the question cost.
func peerHelper(dir string) error {
	report := filepath.Join(dir, "report")
	stored := fdstore.ByName(activation.Files(true))
	n := fdstore.FromEnv(os.Getenv)
	if peers := stored["peer"]; len(peers) > 0 {
		for _, p := range peers {
			if _, err := fmt.Fprintf(p, "hello from pid %d\n", os.Getpid()); err != nil {
				return err
			}
			p.Close()
		}
		if err := appendLine(report, fmt.Sprintf("kept %d", len(peers))); err != nil {
			return err
		}
	} else {
		c, err := net.Dial("unix", filepath.Join(dir, "p.sock"))
		if err != nil {
			return err
		}
		f, err := c.(*net.UnixConn).File()
		c.Close()
		if err != nil {
			return err
		}
		if sent, err := n.Store("peer", f); err != nil || !sent {
			return fmt.Errorf("store: sent %v, %w", sent, err)
		}
		f.Close()
		if err := appendLine(report, "stored"); err != nil {
			return err
		}
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGUSR1)
	if <-sig == syscall.SIGUSR1 {
		// As the shim ends a session on purpose (71: a crash loop).
		_ = appendLine(report, "exit 71")
		os.Exit(71)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line := "sigterm job="
	conn, err := sdbus.Connect(ctx, config.System, os.Getenv)
	if err == nil {
		var restart bool
		restart, err = handover.IsRestart(ctx, conn, peerUnit)
		conn.Close()
		typ := "stop"
		if restart {
			typ = "restart"
		}
		line += typ
	}
	if err != nil {
		line += "error: " + err.Error()
	}
	return appendLine(report, fmt.Sprintf("%s (asked in %s)", line, time.Since(start)))
}

// TestTheStoreKeepsAConnectionAcrossRestartAndDropsItOnStopOrHangUp holds,
// on each leg's real systemd, what live restart relies on: a restart hands
// a stored connection back, still talking to its peer; the unit's job
// during a restart's SIGTERM is "restart" and during a stop's "stop"; a
// stop flushes the store (the peer sees the end); and a stored socket whose
// peer hangs up is dropped.
func TestTheStoreKeepsAConnectionAcrossRestartAndDropsItOnStopOrHangUp(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		b := newStoreBox(t, leg, "fdpeer", peerUnit, peerEnv, func(dir string) string { return dir })
		ln, err := net.Listen("unix", filepath.Join(b.dir, "p.sock"))
		require.NoError(t, err)
		defer ln.Close()
		accepted := make(chan net.Conn, 4)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		accept := func() net.Conn {
			t.Helper()
			select {
			case c := <-accepted:
				t.Cleanup(func() { c.Close() })
				return c
			case <-time.After(30 * time.Second):
				t.Fatal("the helper never connected")
				return nil
			}
		}
		// jobs drops what the question cost from the report's sigterm
		// lines, logging it (docs/live-restart.md quotes it).
		jobs := func() []string {
			var out []string
			for _, l := range b.lines(t) {
				if strings.HasPrefix(l, "sigterm") {
					var cost string
					l, cost, _ = strings.Cut(l, " (asked")
					t.Logf("%s: %s asked%s", leg, l, strings.TrimSuffix(cost, ")"))
				}
				out = append(out, l)
			}
			return out
		}

		b.systemctl("start", peerUnit)
		peer := accept()
		assert.Equal(t, []string{"stored"}, b.lines(t))
		assert.Equal(t, "NFileDescriptorStore=1", b.show("NFileDescriptorStore"))

		b.systemctl("restart", peerUnit)
		pid := strings.TrimPrefix(b.show("MainPID"), "MainPID=")
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(30*time.Second)))
		hello, err := bufio.NewReader(peer).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "hello from pid "+pid+"\n", hello, "the new process talks to the peer on the stored connection")
		assert.Equal(t, []string{"stored", "sigterm job=restart", "kept 1"}, jobs(), "a restart's SIGTERM comes with a restart job")

		b.systemctl("stop", peerUnit)
		assert.Equal(t, "NFileDescriptorStore=0", b.show("NFileDescriptorStore"), "stop flushes the store")
		_, err = peer.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "the peer sees the end: systemd closed its copy")
		assert.Equal(t, []string{"stored", "sigterm job=restart", "kept 1", "sigterm job=stop"}, jobs(), "a stop's SIGTERM comes with a stop job")

		b.systemctl("start", peerUnit)
		second := accept()
		assert.Equal(t, "NFileDescriptorStore=1", b.show("NFileDescriptorStore"))
		second.Close()
		assert.Eventually(t, func() bool { return b.show("NFileDescriptorStore") == "NFileDescriptorStore=0" }, 30*time.Second, 50*time.Millisecond,
			"a stored socket whose peer hung up is dropped")
		b.systemctl("stop", peerUnit)
	})
}

// shippedLine is the line of the shipped units/virtiofsd@.service that sets
// key, such as "Restart=on-abnormal".
func shippedLine(t *testing.T, key string) string {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), "units", "virtiofsd@.service"))
	require.NoError(t, err)
	for _, l := range strings.Split(string(unit), "\n") {
		if strings.HasPrefix(l, key+"=") {
			return l
		}
	}
	t.Fatalf("units/virtiofsd@.service sets no %s=", key)
	return ""
}

// TestTheStoreKeepsAConnectionAcrossAKillOfTheMainProcessButNotAcrossItsOwnExit
// holds, on each leg's real systemd and with the shipped unit's Restart=
// and KillMode=, what a shim crash relies on: kill -9 of the main process
// restarts the unit and hands the stored connection back to the new
// process, still talking to its peer; an exit with one of the shim's own
// codes (71) is not restarted, and the store is flushed (the peer sees the
// end).
func TestTheStoreKeepsAConnectionAcrossAKillOfTheMainProcessButNotAcrossItsOwnExit(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		restart, kill := shippedLine(t, "Restart"), shippedLine(t, "KillMode")
		b := newStoreBox(t, leg, "fdkill", peerUnit, peerEnv, func(dir string) string { return dir }, restart+"\n", kill+"\n")
		ln, err := net.Listen("unix", filepath.Join(b.dir, "p.sock"))
		require.NoError(t, err)
		defer ln.Close()
		b.systemctl("start", peerUnit)
		peer, err := ln.Accept()
		require.NoError(t, err)
		defer peer.Close()
		first := strings.TrimPrefix(b.show("MainPID"), "MainPID=")

		b.systemctl("kill", "--kill-who=main", "-s", "KILL", peerUnit)
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(30*time.Second)))
		hello, err := bufio.NewReader(peer).ReadString('\n')
		require.NoError(t, err, "the restarted process talks to the peer on the stored connection")
		pid := strings.TrimPrefix(b.show("MainPID"), "MainPID=")
		assert.NotEqual(t, first, pid)
		assert.Equal(t, "hello from pid "+pid+"\n", hello)
		assert.Equal(t, "NRestarts=1", b.show("NRestarts"), "%s restarts after a kill -9", restart)
		assert.Equal(t, "NFileDescriptorStore=1", b.show("NFileDescriptorStore"))
		assert.Equal(t, []string{"stored", "kept 1"}, b.lines(t))

		b.systemctl("kill", "--kill-who=main", "-s", "USR1", peerUnit)
		assert.Eventually(t, func() bool { return b.show("ActiveState") == "ActiveState=failed" }, 30*time.Second, 50*time.Millisecond)
		assert.Equal(t, "NRestarts=1", b.show("NRestarts"), "%s does not restart the shim's own exit code", restart)
		assert.Equal(t, "ExecMainStatus=71", b.show("ExecMainStatus"))
		assert.Equal(t, "NFileDescriptorStore=0", b.show("NFileDescriptorStore"), "the store is flushed")
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, err = peer.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "the peer sees the end: systemd closed its copy")
		b.systemctl("reset-failed", peerUnit)
	})
}
