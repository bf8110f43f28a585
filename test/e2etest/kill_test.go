package e2etest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// consoleWatch is a guest console that closes seen once a line equal to
// marker appears.
type consoleWatch struct {
	marker string
	seen   chan struct{}

	mu   sync.Mutex
	buf  strings.Builder
	once sync.Once
}

func newConsoleWatch(marker string) *consoleWatch {
	return &consoleWatch{marker: marker, seen: make(chan struct{})}
}

// guestOutcome is how a guest booted by bootMounted ended.
type guestOutcome struct {
	res *guest.Result
	err error
}

// bootMounted boots a guest in the background with spec, whose script
// prints E2E_MOUNTED once its share is mounted, and returns once the console
// shows that line; the guest's end comes on the channel. The test fails if
// the guest ends first. The guest is stopped and reaped at the test's
// cleanup, before the box's own: no QEMU outlives the test.
func bootMounted(t *testing.T, img *guest.Image, spec guest.Spec) <-chan guestOutcome {
	t.Helper()
	watch := newConsoleWatch("E2E_MOUNTED")
	spec.Console = watch
	if spec.Timeout == 0 {
		spec.Timeout = 90 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan guestOutcome, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		res, err := guest.Run(ctx, img, spec)
		done <- guestOutcome{res, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	select {
	case <-watch.seen:
	case o := <-done:
		serial := ""
		if o.res != nil {
			serial = o.res.Serial
		}
		t.Fatalf("guest ended before it mounted its share: %v\n%s", o.err, serial)
	}
	return done
}

func (w *consoleWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, line := range strings.Split(w.buf.String(), "\n") {
		if strings.TrimRight(line, "\r") == w.marker {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return len(p), nil
}

// hostPID maps a pid of the box's pid namespace to the host's, through the
// NSpid line of /proc/<pid>/status (the host's pid first, the box's last).
func hostPID(b *shimbox.Box, boxPID int) (int, error) {
	for _, pid := range b.Processes() {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
				ids := strings.Fields(rest)
				if len(ids) >= 2 && ids[len(ids)-1] == strconv.Itoa(boxPID) {
					f.Close()
					return pid, nil
				}
			}
		}
		f.Close()
	}
	return 0, fmt.Errorf("no process of the box has pid %d there", boxPID)
}

// servingVirtiofsd returns the box pid of the virtiofsd that serves the
// running session of the instance: the VIRTIOFSD_PID of the session's
// connection line in the journal.
func servingVirtiofsd(t *testing.T, b *shimbox.Box, instance string) int {
	t.Helper()
	inv := show(t, b, "virtiofsd@"+instance+".service", "InvocationID")
	require.NotEmpty(t, inv, "virtiofsd@%s.service is not running", instance)
	var session Session
	require.Eventually(t, func() bool {
		sessions, err := Sessions(context.Background(), b, instance)
		for _, s := range sessions {
			if err == nil && s.InvocationID == inv && s.HasVirtiofsdLine(b.Platform.ConnectedLine()) {
				session = s
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "no %q line in the journal of invocation %s", b.Platform.ConnectedLine(), inv)
	pids := session.VirtiofsdPIDs()
	require.Len(t, pids, 1, session)
	pid, err := strconv.Atoi(pids[0])
	require.NoError(t, err)
	return pid
}

// ioUntilKilledScript mounts vm1 and writes and reads it back in a loop.
// Once the host has created kill-coming in the share, the loop answers
// with "armed" (the host then kills virtiofsd) and the guest waits for the
// loop to fail or stall for 2 s. A request to a dead virtiofsd never
// returns, and the process waits uninterruptibly (not even SIGKILL ends
// it), so the loop runs in the background and the foreground shell only
// watches its progress in /tmp. RESULT io is "failed", "hung", or "ok" when
// the I/O still worked after 60 s of watching.
//
// The loop marks /tmp/armed before it answers in the share: the host may
// kill virtiofsd as soon as the answer's file exists, before virtiofsd
// has replied to the guest, and the request that creates it then never
// returns. The watch is bounded from the start for the same reason: it
// must end even if the guest never gets as far as arming.
const ioUntilKilledScript = `
mount -t virtiofs vm1 /mnt/vm1 || exit 1
echo E2E_MOUNTED
(
	i=0
	while :; do
		echo $i > /mnt/vm1/tick && [ "$(cat /mnt/vm1/tick)" = $i ] || exit 1
		if [ -e /mnt/vm1/kill-coming ] && [ ! -e /tmp/armed ]; then
			: > /tmp/armed && : > /mnt/vm1/armed
		fi
		echo $i > /tmp/progress
		i=$((i+1))
		sleep 0.1
	done
) &
io=$!
last=-1; still=0; n=0
while [ $n -lt 600 ]; do
	sleep 0.1
	kill -0 $io 2>/dev/null || break
	n=$((n+1))
	[ -e /tmp/armed ] || continue
	cur=$(cat /tmp/progress)
	if [ "$cur" = "$last" ]; then still=$((still+1)); else still=0; last=$cur; fi
	[ $still -ge 20 ] && break
done
echo "RESULT armed=$([ -e /tmp/armed ] && echo yes || echo no)"
if ! kill -0 $io 2>/dev/null; then echo RESULT io=failed
elif [ $still -ge 20 ]; then echo RESULT io=hung
else echo RESULT io=ok
fi
`

// TestVirtiofsdKilledMidSessionFailsThatBootOnly pins the direct hand-over
// (FRONT=no, and the C virtiofsd, where the front never runs): a killed
// virtiofsd fails that boot's session only. With the front, the session is
// recovered on a fresh virtiofsd instead (test/systemtest/crash_test.go).
func TestVirtiofsdKilledMidSessionFailsThatBootOnly(t *testing.T) {
	shimbox.Legs(t, testVirtiofsdKilledMidSessionFailsThatBootOnly)
}

func testVirtiofsdKilledMidSessionFailsThatBootOnly(t *testing.T, leg shimbox.Platform) {
	img := requireGuest(t, leg)
	b, shares := newBoxWith(t, leg, []string{"CACHE=auto", "FRONT=no"}, "vm1")
	share := shares["vm1"]

	qemu, err := leg.QEMU(t.Context())
	require.NoError(t, err)
	done := bootMounted(t, img, guest.Spec{
		QEMU:   qemu,
		Shares: []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script: ioUntilKilledScript,
	})
	boxPID := servingVirtiofsd(t, b, "vm1")
	pid, err := hostPID(b, boxPID)
	require.NoError(t, err)
	// The guest watches for a stall only once it has answered kill-coming,
	// and the kill follows its answer at once.
	require.NoError(t, os.WriteFile(filepath.Join(share, "kill-coming"), nil, 0o644))
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(share, "armed"))
		return err == nil
	}, 60*time.Second, 10*time.Millisecond, "the guest never saw kill-coming")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	t.Logf("kill -9 virtiofsd: pid %d in the box, %d on the host", boxPID, pid)

	o := <-done
	require.NoError(t, o.err, "the guest powers off within its bound though its share is dead")
	assert.Equal(t, 0, o.res.ExitStatus, o.res.Serial)
	assert.Equal(t, "yes", o.res.Values["armed"], o.res.Serial)
	assert.Contains(t, []string{"failed", "hung"}, o.res.Values["io"], "the guest's I/O after the kill:\n%s", o.res.Serial)

	// The shim reports the kill: exit status 128+9, unit failed.
	waitInactive(t, b, "vm1")
	assert.Equal(t, "exit-code", show(t, b, "virtiofsd@vm1.service", "Result"))
	assert.Equal(t, "137", show(t, b, "virtiofsd@vm1.service", "ExecMainStatus"))
	assert.Equal(t, "listening", show(t, b, "virtiofsd@vm1.socket", "SubState"))

	// The next boot is served by a new session, with no step in between.
	res := boot(t, b, img, guest.Spec{
		Shares: []guest.Share{{Tag: "vm1", Socket: b.Socket("vm1")}},
		Script: `set -e
mount -t virtiofs vm1 /mnt/vm1
echo "RESULT tick=$(cat /mnt/vm1/tick)"
echo after > /mnt/vm1/after-the-kill
umount /mnt/vm1
`,
	})
	require.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, strings.TrimSpace(readFile(t, filepath.Join(share, "tick"))), res.Values["tick"])
	waitInactive(t, b, "vm1")
	assert.Equal(t, "after\n", readFile(t, filepath.Join(share, "after-the-kill")))
	assert.Equal(t, "success", show(t, b, "virtiofsd@vm1.service", "Result"))

	sessions, err := Sessions(context.Background(), b, "vm1")
	require.NoError(t, err)
	require.Len(t, sessions, 2, "%v", sessions)
	killed, next := sessions[0], sessions[1]
	for _, s := range sessions {
		assert.True(t, s.HasVirtiofsdLine(ReadyLine), s)
		assert.True(t, s.HasVirtiofsdLine(leg.ConnectedLine()), s)
	}
	assert.Equal(t, []string{strconv.Itoa(boxPID)}, killed.VirtiofsdPIDs(), killed)
	assert.True(t, killed.HasShimLine("killed by signal 9"), killed)
	assert.True(t, killed.hasLine("systemd", "code=exited, status=137"), killed)
	assert.NotEqual(t, killed.VirtiofsdPIDs(), next.VirtiofsdPIDs())
}
