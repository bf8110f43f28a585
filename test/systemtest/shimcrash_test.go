package systemtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// shimKills is how many times the shim is killed per boot: odd rounds
// with the guest idle, even rounds while guestload's data-checking
// workload runs on the share.
const shimKills = 6

// TestAShimKilledUnderTheGuestIsRestartedAndTheShareComesBackAfterARemount
// boots a real guest on each leg (the Rust virtiofsd, Debian 13's on
// Debian 12; the front; the shipped units; systemd 252 and 257) and kills the shim's main process (SIGKILL) several times,
// with the guest idle and in the middle of guestload check's I/O. Each
// time the unit restarts (a new shim pid) and resumes the session from
// systemd's store on a fresh virtiofsd, degraded; the VM keeps running, no
// guest operation hangs (each bounded by timeout 10), and after umount and
// mount old and new files are intact. At the end systemctl stop leaves no
// process and an empty store, and the VM still runs.
func TestAShimKilledUnderTheGuestIsRestartedAndTheShareComesBackAfterARemount(t *testing.T) {
	shimbox.Legs(t, testAShimKilledUnderTheGuestIsRestartedAndTheShareComesBackAfterARemount)
}

func testAShimKilledUnderTheGuestIsRestartedAndTheShareComesBackAfterARemount(t *testing.T, leg shimbox.Platform) {
	const unit = "virtiofsd@x.service"
	b, qemu, dir, statePath := guestInstance(t, leg)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "guestload")
	require.NoError(t, guestload.Build(ctx, bin))
	program, err := os.ReadFile(bin)
	require.NoError(t, err)
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)
	run := testdir.Short(t) // QEMU's QMP socket

	n := strconv.Itoa(shimKills)
	m, err := guest.Start(ctx, img, guest.Spec{
		QEMU:    qemu,
		Timeout: 7 * time.Minute,
		QMP:     filepath.Join(run, "qmp"),
		Shares:  []guest.Share{{Tag: "x", Socket: b.Socket("x")}},
		Files:   map[string][]byte{"bin/guestload": program},
		Script: `mount -t virtiofs x /mnt/x || exit 1
t() { timeout 10 "$@"; }
cpid=
for round in $(seq 1 ` + n + `); do
	if [ $((round % 2)) = 0 ]; then
		mkdir -p /mnt/x/io$round
		guestload check -dir /mnt/x/io$round -label r$round -stop /tmp/stop$round -limit 2m -pause 20ms -keep 3 >/tmp/check$round 2>&1 &
		cpid=$!
		k=0; while [ ! -e /mnt/x/io$round/up ] && [ $k -lt 100 ]; do sleep 0.1; k=$((k+1)); done
	fi
	echo $round >/mnt/x/ready
	# Reads work until the resumed session answers EBADF (the fresh
	# virtiofsd has no FUSE state); 600 tries: the guest saw nothing.
	i=0
	while t cat /mnt/x/hello >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
	echo "RESULT seen_$round=$i"
	t stat /mnt/x/hello >/dev/null 2>&1; echo "RESULT stat_$round=$?"
	if [ -n "$cpid" ]; then
		touch /tmp/stop$round
		k=0; while kill -0 $cpid 2>/dev/null && [ $k -lt 150 ]; do sleep 0.1; k=$((k+1)); done
		echo "RESULT checkwait_$round=$k"
		cat /tmp/check$round
		cpid=
	fi
	cd /
	t umount /mnt/x; echo "RESULT umount_$round=$?"
	t mount -t virtiofs x /mnt/x; echo "RESULT mount_$round=$?"
	# The host wrote "killed" once the new shim served the session.
	j=0
	while [ "$(t cat /mnt/x/killed 2>/dev/null)" != "$round" ] && [ $j -lt 100 ]; do sleep 0.1; j=$((j+1)); done
	echo "RESULT read_$round=$(t cat /mnt/x/hello)"
	echo "RESULT write_$round=$(t sh -c "echo round $round >/mnt/x/w$round && cat /mnt/x/w$round")"
done
intact=yes
for round in $(seq 1 ` + n + `); do
	[ "$(t cat /mnt/x/w$round)" = "round $round" ] || intact="no: w$round"
done
echo "RESULT intact=$intact"
echo "RESULT old=$(t cat /mnt/x/hello)"
echo done >/mnt/x/final
# The host stops the unit now; nothing here touches the share again.
echo "RESULT done=yes"
i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
`,
	})
	require.NoError(t, err)
	defer func() {
		m.Kill()
		_, _ = m.Wait()
	}()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Log(status(b, unit))
		t.Fatalf(format+"\nserial console:\n%s", append(args, m.Serial())...)
	}
	mainPID := func() string { return show(t, b, unit, "MainPID")["MainPID"] }
	vmRunning := func() string {
		s, err := m.QMP().Status(ctx)
		if err != nil {
			return err.Error()
		}
		return s
	}

	for round := 1; round <= shimKills; round++ {
		r := strconv.Itoa(round)
		if !pollUntil(ctx, func() bool {
			got, _ := os.ReadFile(filepath.Join(dir, "ready"))
			return strings.TrimSpace(string(got)) == r
		}) {
			fail("round %s: the guest never announced it", r)
		}
		old := mainPID()
		_, err := b.Run(ctx, "kill", "-9", old)
		require.NoError(t, err)
		killedAt := time.Now()
		var st *shimstate.State
		back, cancelBack := context.WithTimeout(ctx, 90*time.Second)
		defer cancelBack()
		if !pollUntil(back, func() bool {
			pid := mainPID()
			st, _ = shimstate.Read(statePath)
			return pid != old && pid != "0" && st != nil && strconv.Itoa(st.ShimPID) == pid &&
				st.Degraded != nil && st.Phase == shimstate.Serving && st.VirtiofsdPID != 0
		}) {
			fail("round %s: the unit never came back serving the session degraded", r)
		}
		assert.Equal(t, "running", vmRunning(), "round %s: the VM keeps running", r)
		assert.Equal(t, "the shim was killed", st.Degraded.LastEnd, "round %s", r)
		t.Logf("round %s: shim %s killed, shim %s serves the session again after %s (virtiofsd %d)",
			r, old, mainPID(), time.Since(killedAt).Round(time.Millisecond), st.VirtiofsdPID)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "killed"), []byte(r+"\n"), 0o644))
	}
	if !pollUntil(ctx, func() bool { _, err := os.Stat(filepath.Join(dir, "final")); return err == nil }) {
		fail("the guest never finished its rounds")
	}
	restarts := show(t, b, unit, "NRestarts")["NRestarts"]
	systemctl(t, b, "stop", unit)
	assert.Equal(t, "inactive/dead", state(t, b, unit))
	assert.Equal(t, "0", show(t, b, unit, "NFileDescriptorStore")["NFileDescriptorStore"], "the stop emptied the store")
	assert.Empty(t, virtiofsdFor(dir), "no virtiofsd left")
	assert.Equal(t, "0", mainPID(), "no shim left")
	assert.Equal(t, "running", vmRunning(), "the VM runs on after the stop (its share is disconnected)")
	m.Kill()
	res, _ := m.Wait()
	require.NotNil(t, res)

	assert.Equal(t, strconv.Itoa(shimKills), restarts, "every kill restarted the unit")
	assert.Equal(t, "yes", res.Values["done"], "the guest ran through every round\n%s", res.Serial)
	assert.Equal(t, "yes", res.Values["intact"], "the files written after each remount are intact")
	assert.Equal(t, "hello", res.Values["old"], "the file written before the boot is intact")
	sawNothing, sawErrors := 0, 0
	for round := 1; round <= shimKills; round++ {
		r := strconv.Itoa(round)
		if res.Values["seen_"+r] == "600" {
			sawNothing++
		} else {
			sawErrors++
		}
		assert.NotEqual(t, "124", res.Values["stat_"+r], "round %s: a request on the share after the kill returned, it did not hang", r)
		assert.Equal(t, "0", res.Values["umount_"+r], "round %s", r)
		assert.Equal(t, "0", res.Values["mount_"+r], "round %s", r)
		assert.Equal(t, "hello", res.Values["read_"+r], "round %s: the share works after the remount", r)
		assert.Equal(t, "round "+r, res.Values["write_"+r], "round %s", r)
		if round%2 == 0 {
			assert.NotEqual(t, "150", res.Values["checkwait_"+r], "round %s: the workload ended when told, none of its operations hung", r)
			assertAppendIntact(t, filepath.Join(dir, "io"+r, guestload.CheckAppend))
		}
	}
	for _, rec := range guestload.ParseCheck(res.Serial) {
		assert.NotContains(t, rec.Error, "sha256 differs", "%s round %d: wrong data, not an error", rec.Label, rec.Round)
		if rec.Event == "summary" {
			t.Logf("workload %s: %d rounds, %d operations, %d failed (after the kill: EBADF until the remount), slowest %s (%s)",
				rec.Label, rec.Rounds, rec.Ops, rec.Errors, rec.MaxLatency(), rec.MaxOp)
		}
	}
	t.Logf("%d shim kills: the guest saw nothing after %d, errors (EBADF until it remounted) after %d", shimKills, sawNothing, sawErrors)
	resumed := waitJournal(t, b, "shim crash: the session the killed shim left", "-u", unit, "-p", "warning")
	assert.NotEmpty(t, resumed["MESSAGE"])
}

// assertAppendIntact checks a guestload check's append file on the host:
// its lines are "round 1", "round 2", ... in order, whatever the kill cut.
func assertAppendIntact(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if !assert.NoError(t, err) {
		return
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, l := range lines {
		if l == "" && len(lines) == 1 {
			break
		}
		assert.Equal(t, fmt.Sprintf("round %d", i+1), l, "%s line %d", path, i+1)
	}
}

// TestAShimKilledUnderASessionWithoutTheFrontFailsTheUnitSayingSo holds,
// on each leg, that a shim killed while its virtiofsd serves a VM directly
// (FRONT=no; the C virtiofsd has no front either) ends as before Restart=
// was set: virtiofsd is stopped with it, the restarted shim finds its
// marker in the store and fails the unit with exit status 72 and a status
// that says what happened, and the socket listens again.
func TestAShimKilledUnderASessionWithoutTheFrontFailsTheUnitSayingSo(t *testing.T) {
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		b := box(t, leg)
		const unit = "virtiofsd@x.service"
		dir, err := b.AddInstance("x", "FRONT=no")
		require.NoError(t, err)
		enable(t, b, "x")
		c, err := b.Session("x", 30*time.Second)
		require.NoError(t, err)
		defer c.Close()
		_, err = b.Run(context.Background(), "kill", "-9", show(t, b, unit, "MainPID")["MainPID"])
		require.NoError(t, err)

		waitState(t, b, unit, "failed/failed")
		p := show(t, b, unit, "ExecMainStatus", "StatusText", "NRestarts", "NFileDescriptorStore")
		assert.Equal(t, "72", p["ExecMainStatus"], status(b, unit))
		assert.Equal(t, "1", p["NRestarts"], "the unit restarted once, and the new shim ended it")
		assert.Contains(t, p["StatusText"], "the last shim was killed while its virtiofsd served a VM without the front")
		assert.Equal(t, "0", p["NFileDescriptorStore"])
		assert.Empty(t, virtiofsdFor(dir), "no virtiofsd left")
		require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, err = c.Read(make([]byte, 1))
		assert.Error(t, err, "the VM's connection ended with virtiofsd")
		assert.Equal(t, "active/listening", state(t, b, "virtiofsd@x.socket"), "the next VM starts a session as before")
		systemctl(t, b, "reset-failed", unit)
	})
}
