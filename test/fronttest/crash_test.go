package fronttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/killtree"
)

// crashRounds is how many times the guest's virtiofsd is killed per boot.
const crashRounds = 4

// crashWorkload is the guest's script for the crash test: it holds nothing
// open on the share. Each round it says it is ready (ready.N in the share),
// loads the share (writes with fsync, reads, listings) until an operation
// fails, which the host's kill -9 of virtiofsd causes (the fresh virtiofsd
// never saw FUSE_INIT: EBADF); it prints "CRASHSEEN N" at once, runs more
// operations on the dead mount (each must return, errors allowed), then
// unmounts and mounts the share again and checks that the host's file, the
// files of earlier rounds and a new one read back. Every operation runs
// under `timeout 10`: one that is killed counts as a hang.
//
//	RESULT hangs=N    operations that did not return within 10 s (want 0)
//	RESULT errors=N   failures after the remount, or a share that never failed (want 0)
//	RESULT rounds=N
func crashWorkload(rounds int) string {
	return fmt.Sprintf(`cd /
mount -t virtiofs %[1]s /mnt/%[1]s || exit 1
m=/mnt/%[1]s
echo up >$m/%[2]s
hangs=0
errors=0
op() { timeout -s KILL 10 "$@"; rc=$?; [ $rc -eq 137 ] && { hangs=$((hangs+1)); echo "GUEST HANG round $r: $*"; }; return $rc; }
fail() { errors=$((errors+1)); echo "GUEST ERROR round $r: $*"; }
r=0
while [ $r -lt %[3]d ]; do
	r=$((r+1))
	echo $r >$m/ready.$r || fail "ready.$r"
	n=0
	while :; do
		n=$((n+1))
		op dd if=/dev/urandom of=$m/load bs=4096 count=4 conv=fsync 2>/dev/null || break
		op cat $m/%[4]s >/dev/null || break
		op ls $m >/dev/null || break
		[ $n -lt 5000 ] || { fail "the share never failed"; break; }
	done
	echo "CRASHSEEN $r"
	k=0
	while [ $k -lt 5 ]; do
		k=$((k+1))
		op stat $m/%[4]s >/dev/null 2>&1
		op ls $m >/dev/null 2>&1
		op cat $m/%[4]s >/dev/null 2>&1
		op sh -c "echo x >$m/after.$r" 2>/dev/null
	done
	op umount $m || fail "umount"
	op mount -t virtiofs %[1]s $m || { fail "mount"; break; }
	[ "$(op cat $m/%[4]s)" = %[5]q ] || fail "the host's file reads '$(cat $m/%[4]s)'"
	j=1
	while [ $j -lt $r ]; do
		[ "$(op cat $m/new.$j)" = "new $j" ] || fail "new.$j of an earlier round"
		j=$((j+1))
	done
	op sh -c "echo 'new $r' >$m/new.$r" || fail "write new.$r"
	[ "$(op cat $m/new.$r)" = "new $r" ] || fail "read new.$r"
done
echo "RESULT hangs=$hangs"
echo "RESULT errors=$errors"
echo "RESULT rounds=$r"
`, tag, upFile, rounds, heldFile, heldContent)
}

// marks hands over, with the time it was written, each console line that
// starts with a prefix.
type marks struct {
	prefix string
	c      chan mark
	mu     sync.Mutex
	w      *io.PipeWriter
}

type mark struct {
	line string
	at   time.Time
}

func newMarks(prefix string) *marks {
	r, w := io.Pipe()
	m := &marks{prefix: prefix, c: make(chan mark, 64), w: w}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if strings.HasPrefix(line, prefix) {
				m.c <- mark{line, time.Now()}
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return m
}

func (m *marks) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.w.Write(p)
}

func (m *marks) close() { m.w.Close() }

// TestAGuestHoldingNothingOpenSurvivesVirtiofsdKilledUnderLoad: kill -9
// of the Rust virtiofsd while the guest writes and reads; the Front
// recovers the session onto a fresh virtiofsd, the guest never hangs,
// and after umount and mount its old and new files work. It logs the
// time from each kill to the guest's first answered request.
func TestAGuestHoldingNothingOpenSurvivesVirtiofsdKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	seen := newMarks("CRASHSEEN ")
	defer seen.close()
	r := bootWith(t, crashWorkload(crashRounds), seen, func(r *rig) front.Config {
		return front.Config{Respawn: r.respawner(t, crashRounds, 200)}
	})

	var took []time.Duration
	// Each kill comes a second after the guest's round began, under its
	// load: a pace (a timer), not a wait for a condition.
	for i := 1; i <= crashRounds; i++ {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, err := os.Stat(filepath.Join(r.share, "ready."+strconv.Itoa(i)))
			assert.NoError(c, err)
		}, 2*time.Minute, 50*time.Millisecond, "round %d: the guest mounts the share again; console:\n%s", i, r.m.Serial())
		<-time.After(time.Second)
		victim := r.live()
		killed := time.Now()
		killTree(t, victim.cmd.Process.Pid)
		select {
		case m := <-seen.c:
			require.Equal(t, "CRASHSEEN "+strconv.Itoa(i), m.line)
			took = append(took, m.at.Sub(killed))
			t.Logf("round %d: the guest's first request after the kill was answered %v after it", i, m.at.Sub(killed))
		case <-time.After(time.Minute):
			t.Fatalf("round %d: the guest got no answer within a minute of the kill; console:\n%s", i, r.m.Serial())
		}
		assert.Error(t, victim.wait(), "round %d: the killed virtiofsd did not exit cleanly", i)
	}
	slices.Sort(took)
	t.Logf("kill to the first answered request over %d rounds: median %v, min %v, max %v", len(took), took[len(took)/2], took[0], took[len(took)-1])

	res, err := r.m.Wait()
	require.NoError(t, err, "the guest finishes")
	assert.Equal(t, 0, res.ExitStatus, res.Serial)
	assert.Equal(t, "0", res.Values["hangs"], "every guest operation returned within 10 s:\n%s", res.Serial)
	assert.Equal(t, "0", res.Values["errors"], "after umount and mount the old and new files work:\n%s", res.Serial)
	assert.Equal(t, strconv.Itoa(crashRounds), res.Values["rounds"])
	st := r.front.Status()
	assert.True(t, st.Degraded)
	assert.Equal(t, crashRounds, st.Recoveries)
	t.Logf("last recovery: %v in the front (%v starting virtiofsd), bases %v, %d unanswered requests answered",
		st.LastRecovery.Took, st.LastRecovery.Respawn, st.LastRecovery.Bases, st.LastRecovery.Answered)
	assert.NoError(t, <-r.ran, "the front ends cleanly when QEMU quits")
	last := r.live()
	assert.NoError(t, last.wait(), "the last virtiofsd exits once QEMU has gone\n%s", last.stderr())
}

// respawner is a Front's Respawn for the rig: it starts up to limit fresh
// virtiofsds (numbered from first), each the rig's current one, and then
// gives up.
func (r *rig) respawner(t *testing.T, limit, first int) func(context.Context, error) (*net.UnixConn, error) {
	spawned := 0
	return func(_ context.Context, cause error) (*net.UnixConn, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if spawned == limit {
			return nil, fmt.Errorf("more crashes than the test made (%d): %w", limit, cause)
		}
		spawned++
		p, err := spawnVirtiofsd(t, r.bin, r.dir, r.share, first+spawned)
		if err != nil {
			return nil, err
		}
		r.current = p
		return p.conn, nil
	}
}

// live is the virtiofsd that serves the session now.
func (r *rig) live() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// killTree kills a virtiofsd as a crash does (killtree.Kill: its sandboxed
// child too).
func killTree(t *testing.T, pid int) {
	t.Helper()
	if err := killtree.Kill(pid); err != nil {
		t.Error(err)
	}
}
