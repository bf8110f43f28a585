package robustness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// enable configures instance in b (SHARED_DIR under b.Root, plus extra
// lines) and enables its socket.
func enable(t *testing.T, ctx context.Context, b *shimbox.Box, instance string, extra ...string) string {
	t.Helper()
	share, err := b.AddInstance(instance, extra...)
	require.NoError(t, err)
	out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@"+instance+".socket")
	require.NoError(t, err, out)
	return share
}

// TestSessionSurvivesJournaldRestart restarts journald while a client is
// connected: the session keeps answering, and virtiofsd's lines written
// after the restart (its "virtio_loop: Exit" at the disconnection) reach the
// journal with the instance's fields.
func TestSessionSurvivesJournaldRestart(t *testing.T) {
	requireVirtiofsd(t)
	b := shimbox.New(t, shimbox.Options{Name: "robust-journald"})
	ctx := context.Background()
	enable(t, ctx, b, "vm1")
	c, err := b.Dial("vm1", 15*time.Second)
	require.NoError(t, err)
	defer c.Close()
	before := show(ctx, b, "systemd-journald.service", "MainPID")

	out, err := b.Systemctl(ctx, "restart", "systemd-journald.service")
	require.NoError(t, err, out)
	after := show(ctx, b, "systemd-journald.service", "MainPID")
	require.NotEqual(t, before, after, "journald was not restarted")

	require.NoError(t, vhostuser.GetFeatures(c, 10*time.Second), "the session after journald's restart")
	assert.Equal(t, "active", show(ctx, b, "virtiofsd@vm1.service", "ActiveState"))
	c.Close()
	assert.Equal(t, "inactive", waitEnded(t, ctx, b, "virtiofsd@vm1.service", 15*time.Second))
	waitFor(t, 10*time.Second, "virtio_loop: Exit in the journal after the restart", func() (bool, string) {
		j := journal(ctx, b, "SYSLOG_IDENTIFIER=virtiofsd", "VIRTIOFSD_INSTANCE=vm1")
		return strings.Contains(j, "virtio_loop: Exit"), j
	})
}

// TestVirtiofsdMissingOrNotExecutable points VIRTIOFSD= at a missing path
// and at a file without execute permission: the session ends with exit
// status 69 and the journal names the binary.
func TestVirtiofsdMissingOrNotExecutable(t *testing.T) {
	b := shimbox.New(t, shimbox.Options{Name: "robust-binary"})
	ctx := context.Background()
	notExec := filepath.Join(b.Root, "virtiofsd")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	for _, tc := range []struct{ instance, binary, says string }{
		{"missing", "/nonexistent", "/nonexistent does not exist"},
		{"noexec", notExec, notExec + " is not executable"},
	} {
		t.Run(tc.instance, func(t *testing.T) {
			enable(t, ctx, b, tc.instance, "VIRTIOFSD="+tc.binary)
			unit := "virtiofsd@" + tc.instance + ".service"
			if c, err := b.Dial(tc.instance, 10*time.Second); err == nil {
				c.Close()
				t.Fatalf("a client got answers from %s with VIRTIOFSD=%s", unit, tc.binary)
			}
			assert.Equal(t, "failed", waitEnded(t, ctx, b, unit, 15*time.Second))
			assert.Equal(t, "69", show(ctx, b, unit, "ExecMainStatus"))
			waitFor(t, 10*time.Second, "the journal names "+tc.binary, func() (bool, string) {
				j := journal(ctx, b, "-u", unit)
				return strings.Contains(j, tc.says), j
			})
		})
	}
}

// TestSharedDirRemovedWhileServing removes the shared directory under a
// connected client. The C virtiofsd holds the directory open and keeps
// answering; when the client goes, the session ends and leaves no process;
// the next session fails with the config error (78), and the journal says
// the shared directory is missing.
func TestSharedDirRemovedWhileServing(t *testing.T) {
	requireVirtiofsd(t)
	b := shimbox.New(t, shimbox.Options{Name: "robust-share"})
	ctx := context.Background()
	share := enable(t, ctx, b, "vm1")
	unit := "virtiofsd@vm1.service"
	c, err := b.Dial("vm1", 15*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, os.RemoveAll(share))

	err = vhostuser.GetFeatures(c, 10*time.Second)
	t.Logf("GET_FEATURES after removing the share: %v (service %s)", err, show(ctx, b, unit, "ActiveState"))
	c.Close()
	state := waitEnded(t, ctx, b, unit, 15*time.Second)
	t.Logf("first session ended: %s, exit status %s", state, show(ctx, b, unit, "ExecMainStatus"))
	waitFor(t, 5*time.Second, "no shim or virtiofsd left", func() (bool, string) {
		s, v := shims(b), virtiofsds(b.Root)
		return len(s)+len(v) == 0, fmt.Sprintf("shims %v, virtiofsd %v", s, v)
	})

	// The next session: a VM reconnecting.
	c2, err := b.Dial("vm1", 10*time.Second)
	if err == nil {
		c2.Close()
		t.Fatal("a new session answered although the shared directory is gone")
	}
	t.Logf("next session's client: %v; socket %s (%s)", err, show(ctx, b, "virtiofsd@vm1.socket", "ActiveState"),
		show(ctx, b, "virtiofsd@vm1.socket", "Result"))
	assert.Equal(t, "failed", waitEnded(t, ctx, b, unit, 15*time.Second))
	status := show(ctx, b, unit, "ExecMainStatus")
	assert.Equal(t, "78", status, "the next session's exit status: the config error")
	waitFor(t, 10*time.Second, "the journal names the missing shared directory", func() (bool, string) {
		j := journal(ctx, b, "-u", unit, "SYSLOG_IDENTIFIER=virtiofsd-shim")
		var refusals []string
		for _, l := range strings.Split(j, "\n") {
			if strings.Contains(l, share) {
				refusals = append(refusals, l)
			}
		}
		if len(refusals) > 0 {
			t.Logf("next session: exit status %s, %d start(s) refused: %s", status, len(refusals), refusals[0])
		}
		return len(refusals) > 0, j
	})
	waitFor(t, 5*time.Second, "no shim or virtiofsd left", func() (bool, string) {
		s, v := shims(b), virtiofsds(b.Root)
		return len(s)+len(v) == 0, fmt.Sprintf("shims %v, virtiofsd %v", s, v)
	})
}

// TestHundredInstancesStartAtOnce enables 100 sockets and connects to all
// of them at the same time: every session becomes ready and answers.
func TestHundredInstancesStartAtOnce(t *testing.T) {
	requireVirtiofsd(t)
	const n = 100
	b := shimbox.New(t, shimbox.Options{Name: "robust-100"})
	ctx := context.Background()
	sockets := make([]string, n)
	for i := range sockets {
		name := fmt.Sprintf("i%d", i)
		_, err := b.AddInstance(name)
		require.NoError(t, err)
		sockets[i] = "virtiofsd@" + name + ".socket"
	}
	out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, sockets...)...)
	require.NoError(t, err, out)

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		errs  []string
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := b.Dial(fmt.Sprintf("i%d", i), 60*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("i%d: %v", i, err))
				return
			}
			conns = append(conns, c)
		}(i)
	}
	wg.Wait()
	for _, c := range conns {
		assert.NoError(t, vhostuser.GetFeatures(c, 10*time.Second))
		c.Close()
	}
	assert.Empty(t, errs)
	assert.Len(t, conns, n)
	waitFor(t, 60*time.Second, "all sessions end", func() (bool, string) {
		s, v := shims(b), virtiofsds(b.Root)
		return len(s)+len(v) == 0, fmt.Sprintf("%d shims, %d virtiofsd left", len(s), len(v))
	})
}
