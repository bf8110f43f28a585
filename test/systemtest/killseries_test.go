package systemtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/plan"
	shimstate "github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/linestamp"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// killsEnv sets how many SIGKILLs the kill series gives virtiofsd: 12 by
// default (make test), 50 for the full series
// (VIRTIOFSD_SHIM_KILLS=50, about 15 minutes).
const killsEnv = "VIRTIOFSD_SHIM_KILLS"

// shimKillsEnv sets how many SIGKILLs the shim series gives the shim's
// main process on each leg: 4 by default (make test: one boot, one kill
// at each moment), 50 for the full series
// (VIRTIOFSD_SHIM_SHIM_KILLS=50).
const shimKillsEnv = "VIRTIOFSD_SHIM_SHIM_KILLS"

// target is what a kill series kills: x's virtiofsd, or the shim's main
// process (the unit restarts it, and the new shim resumes the session
// from systemd's fd store; with KillMode=mixed virtiofsd dies with it).
type target string

const (
	virtiofsdTarget target = "virtiofsd"
	shimTarget      target = "shim"
)

// moment is when in a session's life the host kills its virtiofsd or
// its shim.
type moment string

const (
	// atSetup: as soon as the VM has connected, while QEMU makes its
	// boot-time setup and before the guest's driver starts; the first kill
	// of each boot.
	atSetup moment = "setup"
	// atIdle: the guest lists the share every 0.2 s and does nothing else.
	atIdle moment = "idle"
	// atIO: the guest writes (fsync), reads and lists the share without a
	// pause.
	atIO moment = "io"
	// atReloadOld: a systemctl reload is in flight, and the serving
	// virtiofsd dies as soon as the new one runs. The guest is at its I/O.
	atReloadOld moment = "reload-old"
	// atReloadNew: a systemctl reload is in flight, and the new virtiofsd
	// dies as soon as it runs. The guest is at its I/O.
	atReloadNew moment = "reload-new"
	// atReload: a systemctl reload is in flight, and the shim dies as
	// soon as the new virtiofsd runs. The guest is at its I/O.
	atReload moment = "reload"
)

// roundMoments are, for each target, the moments of the rounds after a
// boot's setup kill, in the order the series cycles through them.
var roundMoments = map[target][]moment{
	virtiofsdTarget: {atIdle, atIO, atReloadOld, atReloadNew},
	shimTarget:      {atIdle, atIO, atReload},
}

// killPlan splits n kills into boots: each boot starts with a setup kill,
// then its rounds cycle through rounds, carrying on where the last boot
// stopped. Up to 12 kills a boot has 4, which stays under the crash
// bound (plan.CrashLimit in a session) with no pause; a longer series has
// 10 a boot, fewer boots, paced to the bound (killPace).
func killPlan(n int, rounds []moment) [][]moment {
	per := plan.CrashLimit - 1
	if n > 12 {
		per = 10
	}
	var boots [][]moment
	next := 0
	for n > 0 {
		k := min(per, n)
		boot := []moment{atSetup}
		for range k - 1 {
			boot = append(boot, rounds[next%len(rounds)])
			next++
		}
		boots = append(boots, boot)
		n -= k
	}
	return boots
}

// killPace spaces one session's kills so that the crash bound never ends
// it: at most plan.CrashLimit-1 kills within plan.CrashWindow (and a
// second more, for the time between a kill and the shim counting it).
type killPace struct {
	times []time.Time
}

// wait returns once one more kill stays under the bound, or when ctx ends.
func (p *killPace) wait(ctx context.Context) {
	window := plan.CrashWindow + time.Second
	for {
		now := time.Now()
		p.times = slices.DeleteFunc(p.times, func(t time.Time) bool { return now.Sub(t) >= window })
		if len(p.times) < plan.CrashLimit-1 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.times[0].Add(window).Sub(now)):
		}
	}
}

func (p *killPace) killed(at time.Time) { p.times = append(p.times, at) }

func TestKillPlanSpreadsTheKillsOverTheMomentsWithASetupKillPerBoot(t *testing.T) {
	count := func(boots [][]moment) (map[moment]int, int) {
		m, total := map[moment]int{}, 0
		for _, b := range boots {
			assert.Equal(t, atSetup, b[0], "each boot starts with a setup kill")
			for _, k := range b {
				m[k]++
				total++
			}
		}
		return m, total
	}
	short := killPlan(12, roundMoments[virtiofsdTarget])
	m, total := count(short)
	assert.Equal(t, 12, total)
	assert.Len(t, short, 3)
	for _, b := range short {
		assert.Less(t, len(b), plan.CrashLimit, "a boot of the short series never reaches the crash bound")
	}
	assert.Equal(t, map[moment]int{atSetup: 3, atIdle: 3, atIO: 2, atReloadOld: 2, atReloadNew: 2}, m)

	full := killPlan(50, roundMoments[virtiofsdTarget])
	m, total = count(full)
	assert.Equal(t, 50, total)
	assert.Len(t, full, 5)
	assert.Equal(t, map[moment]int{atSetup: 5, atIdle: 12, atIO: 11, atReloadOld: 11, atReloadNew: 11}, m)

	// The shim series: make test's one boot has a kill at each moment.
	m, _ = count(killPlan(4, roundMoments[shimTarget]))
	assert.Equal(t, map[moment]int{atSetup: 1, atIdle: 1, atIO: 1, atReload: 1}, m)
	full = killPlan(50, roundMoments[shimTarget])
	m, total = count(full)
	assert.Equal(t, 50, total)
	assert.Len(t, full, 5)
	assert.Equal(t, map[moment]int{atSetup: 5, atIdle: 15, atIO: 15, atReload: 15}, m)
}

func TestKillPaceLetsNoMoreThanTheBoundLessOneKillsIntoTheWindow(t *testing.T) {
	var p killPace
	now := time.Now()
	for i := range plan.CrashLimit - 1 {
		p.killed(now.Add(-plan.CrashWindow + time.Duration(i)*time.Millisecond))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // a wait that would block returns at once with ctx ended
	p.wait(ctx)
	assert.Len(t, p.times, plan.CrashLimit-1, "kills within the window (and its margin) are still counted")

	var q killPace
	q.killed(now.Add(-2 * plan.CrashWindow))
	q.wait(t.Context())
	assert.Empty(t, q.times, "a kill older than the window no longer counts")
}

// killSeriesScript is the guest's side of one boot. It mounts the control
// share c (never killed: the host's messages) and x (killed), and for
// each round r: writes f.r on x (fsync'd) and keeps its sha256, says
// ready.r on c with the round's moment, then runs the moment's activity
// until the host's done.r appears (idle: ls every 0.2 s; else dd with
// fsync, cat and ls without pause). At its first failed operation it
// prints "ANSWERED r" (the host times it). Then, if the share fails or
// the host says "crash", it unmounts and mounts x again; it checks every
// f.N written so far against its sha256 and writes checked.r on c. Every
// operation on x runs under `timeout -s KILL 10`; one killed counts as a
// hang.
func killSeriesScript(rounds []moment) string {
	var names []string
	for _, m := range rounds {
		names = append(names, string(m))
	}
	return `cd /
mount -t virtiofs c /mnt/c || exit 1
mount -t virtiofs x /mnt/x || exit 1
c=/mnt/c
m=/mnt/x
ops=0; fails=0; hangs=0; remounts=0; badremounts=0; bad=0; answered=0
: >/tmp/sums
op() {
	ops=$((ops+1))
	timeout -s KILL 10 "$@"
	rc=$?
	[ $rc -eq 137 ] && { hangs=$((hangs+1)); echo "GUEST HANG round $r: $*"; }
	[ $rc -eq 0 ] || fails=$((fails+1))
	return $rc
}
r=0
for mo in ` + strings.Join(names, " ") + `; do
	r=$((r+1))
	dd if=/dev/urandom of=/tmp/f bs=4096 count=4 2>/dev/null
	s=$(sha256sum </tmp/f | cut -d' ' -f1)
	if op dd if=/tmp/f of=$m/f.$r bs=4096 conv=fsync 2>/dev/null; then
		echo "$s  $m/f.$r" >>/tmp/sums
	else
		echo "GUEST ERROR round $r: write f.$r"
	fi
	echo $mo >$c/ready.$r
	seen=0
	end=$(($(date +%s)+600))
	while [ ! -e $c/done.$r ]; do
		[ $(date +%s) -lt $end ] || { echo "GUEST ERROR round $r: the host never said done"; break; }
		if [ $mo = idle ]; then
			sleep 0.2
			op ls $m >/dev/null 2>&1
		else
			op dd if=/dev/urandom of=$m/load bs=4096 count=4 conv=fsync 2>/dev/null &&
				op cat $m/f.1 >/dev/null 2>&1 &&
				op ls $m >/dev/null 2>&1
		fi
		if [ $? -ne 0 ]; then
			[ $seen -eq 1 ] || { echo "ANSWERED $r"; answered=$((answered+1)); }
			seen=1
			sleep 0.1
		fi
	done
	said=$(cat $c/done.$r)
	remounted=no
	if [ "$said" = crash ] || ! op ls $m >/dev/null 2>&1; then
		if op umount $m && op mount -t virtiofs x $m; then
			remounts=$((remounts+1)); remounted=yes
		else
			badremounts=$((badremounts+1)); remounted=failed
			echo "GUEST ERROR round $r: umount and mount"
		fi
	fi
	op sha256sum -c /tmp/sums >/tmp/check 2>&1
	b=$(($(wc -l </tmp/sums) - $(grep -c ': OK$' /tmp/check)))
	[ $b -eq 0 ] || { echo "GUEST ERROR round $r: $b file(s) differ"; cat /tmp/check; }
	bad=$((bad+b))
	echo "RESULT round_$r=$mo host=$said failed_seen=$seen remount=$remounted bad=$b"
	echo $r >$c/checked.$r
done
echo "RESULT ops=$ops"
echo "RESULT fails=$fails"
echo "RESULT hangs=$hangs"
echo "RESULT answered=$answered"
echo "RESULT remounts=$remounts"
echo "RESULT badremounts=$badremounts"
echo "RESULT bad=$bad"
echo "RESULT files=$(wc -l </tmp/sums)"
echo "RESULT rounds=$r"
`
}

// consoleMarks records when each console line that starts with prefix was
// first written (the guest's "ANSWERED r").
type consoleMarks struct {
	*linestamp.Writer
	mu sync.Mutex
	at map[string]time.Time
}

func newConsoleMarks(prefix string) *consoleMarks {
	c := &consoleMarks{at: map[string]time.Time{}}
	c.Writer = linestamp.New(func(line string, at time.Time) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			c.mu.Lock()
			if _, seen := c.at[rest]; !seen {
				c.at[rest] = at
			}
			c.mu.Unlock()
		}
	})
	return c
}

func (c *consoleMarks) get(key string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.at[key]
	return t, ok
}

// killTally is the series' counts and times, over all boots.
type killTally struct {
	kills, recoveries, kept int
	byMoment                map[moment]int
	rounds, seen            int             // kills after the guest's mount, and those its operations saw (one failed)
	served                  []time.Duration // kill to the guest's first answered request, where it saw one
	recovered               []time.Duration // kill to the state saying the session is recovered
	reloads, reloadsFailed  int             // reloads in flight at a kill, and those systemctl reload failed
	ops, fails, hangs       int
	remounts, badRemounts   int
	files, bad              int
}

// TestAGuestSurvivesASeriesOfVirtiofsdKillsAtEveryMoment is issue 25's
// fault-injection series for virtiofsd on the Debian 13 leg (Rust
// virtiofsd, shipped units, a real QEMU 10 guest): SIGKILLs of virtiofsd
// right after the VM connects, while the guest idles, under its I/O, and
// during a systemctl reload (the old or the new virtiofsd). No guest
// operation may hang (each returns within 10 s; errors are expected), the
// VM keeps running, the guest (holding nothing open) gets its share back
// with umount and mount, the files it wrote and fsync'd before each kill
// read back with the same sha256, and once the VM has quit no process of
// the units is left, nor anything in systemd's store; the shim's
// descriptors do not grow with the kills. 12 kills in 3 boots by default;
// VIRTIOFSD_SHIM_KILLS=50 runs the full series (5 boots, paced to the
// crash bound).
func TestAGuestSurvivesASeriesOfVirtiofsdKillsAtEveryMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	killSeries(t, shimbox.Debian13, virtiofsdTarget, killsEnv, 12)
}

// TestAGuestSurvivesASeriesOfShimKillsAtEveryMoment is issue 25's
// fault-injection series for the shim, on each leg (the Rust virtiofsd,
// Debian 13's on Debian 12; shipped units, so Restart=on-abnormal and
// KillMode=mixed; a real QEMU 10 guest): SIGKILLs of the shim's main
// process right after the VM connects (before the guest's driver starts),
// while the guest idles, under its I/O, and while a systemctl reload is in
// flight (once the new virtiofsd runs). Each time the unit restarts and
// the new shim resumes the session from systemd's store on a fresh
// virtiofsd, degraded (virtiofsd died with the shim: EBADF until a
// remount); a reload in flight fails or finishes, never hangs. No guest
// operation may hang, the VM keeps running, the files the guest fsync'd
// read back intact after its remount, and once the VM has quit no process
// of the units is left, nor anything in the store. The log says how many
// kills the guest saw. 4 kills a leg by default (one boot, one at each
// moment); VIRTIOFSD_SHIM_SHIM_KILLS=50 runs the full series.
func TestAGuestSurvivesASeriesOfShimKillsAtEveryMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		killSeries(t, leg, shimTarget, shimKillsEnv, 4)
	})
}

// killSeries boots the guest as often as the plan of n kills of tg (or
// the number in env) needs, kills tg at each moment of each boot, and
// logs and checks the totals.
func killSeries(t *testing.T, leg shimbox.Platform, tg target, env string, n int) {
	if v := os.Getenv(env); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "%s=%q: want a number of kills", env, v)
	}
	b, qemu, xdir, statePath := guestInstance(t, leg)
	cdir, err := b.AddInstance("c")
	require.NoError(t, err)
	enable(t, b, "c")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	img, err := guest.Prepare(ctx, "")
	require.NoError(t, err)

	tally := killTally{byMoment: map[moment]int{}}
	began := time.Now()
	for i, boot := range killPlan(n, roundMoments[tg]) {
		killSeriesBoot(ctx, t, b, img, qemu, statePath, xdir, cdir, tg, i+1, boot, &tally)
		if t.Failed() {
			break
		}
	}
	took := time.Since(began)

	q := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	t.Logf("%s kill series: %d kills in %v (%v), %d recoveries, %d kills the session took without a crash (a reload's new virtiofsd); "+
		"the guest saw %d of the %d kills after its mount (a failed operation); %d reloads in flight at a kill, %d failed; "+
		"guest: %d operations, %d failed, %d hung; %d remounts, %d failed; %d files checked, %d differ; "+
		"kill to the first answered request (%d rounds): median %v, p99 %v; kill to the recovery in the state (%d): median %v, p99 %v",
		tg, tally.kills, took.Round(time.Second), tally.byMoment, tally.recoveries, tally.kept,
		tally.seen, tally.rounds, tally.reloads, tally.reloadsFailed,
		tally.ops, tally.fails, tally.hangs, tally.remounts, tally.badRemounts, tally.files, tally.bad,
		len(tally.served), q(tally.served, 0.5), q(tally.served, 0.99),
		len(tally.recovered), q(tally.recovered, 0.5), q(tally.recovered, 0.99))
	assert.Equal(t, n, tally.kills)
	assert.Zero(t, tally.hangs, "no guest operation hung")
	assert.Zero(t, tally.badRemounts, "every remount worked")
	assert.Zero(t, tally.bad, "every fsync'd file read back intact")
}

// killSeriesBoot boots the guest once and kills x's virtiofsd or shim (tg)
// at each of the boot's moments, then checks what the guest saw and that
// the units left nothing behind.
func killSeriesBoot(ctx context.Context, t *testing.T, b *shimbox.Box, img *guest.Image, qemu, statePath, xdir, cdir string,
	tg target, boot int, moments []moment, tally *killTally) {
	t.Helper()
	const unit = "virtiofsd@x.service"
	for _, dir := range []string{xdir, cdir} {
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, n := range names {
			require.NoError(t, os.RemoveAll(n))
		}
	}
	marks := newConsoleMarks("ANSWERED ")
	rounds := moments[1:]
	m, err := guest.Start(ctx, img, guest.Spec{
		QEMU:    qemu,
		Timeout: 25 * time.Minute,
		Shares:  []guest.Share{{Tag: "c", Socket: b.Socket("c")}, {Tag: "x", Socket: b.Socket("x")}},
		Script:  killSeriesScript(rounds),
		Console: marks,
		QMP:     filepath.Join(t.TempDir(), "qmp"),
	})
	require.NoError(t, err)
	var hostLog []string
	logf := func(format string, a ...any) {
		hostLog = append(hostLog, fmt.Sprintf("boot %d: ", boot)+fmt.Sprintf(format, a...))
	}
	defer func() {
		if t.Failed() {
			m.Kill()
		}
		res, werr := m.Wait()
		if res != nil {
			keys := slices.Sorted(maps.Keys(res.Values))
			for _, k := range keys {
				if strings.HasPrefix(k, "round_") {
					logf("guest %s: %s", k, res.Values[k])
				}
			}
		}
		t.Log(strings.Join(hostLog, "\n"))
		if !assert.NoError(t, werr, "boot %d: the guest ran its script to the end", boot) || res == nil {
			t.Log(status(b, unit))
			return
		}
		require.Equal(t, 0, res.ExitStatus, res.Serial)
		num := func(k string) int { v, _ := strconv.Atoi(res.Values[k]); return v }
		assert.Equal(t, strconv.Itoa(len(rounds)), res.Values["rounds"], "boot %d: the guest ran every round\n%s", boot, res.Serial)
		assert.Zero(t, num("hangs"), "boot %d: no operation hung\n%s", boot, res.Serial)
		assert.Zero(t, num("bad"), "boot %d: every fsync'd file reads back\n%s", boot, res.Serial)
		assert.Zero(t, num("badremounts"), "boot %d: every remount worked\n%s", boot, res.Serial)
		tally.ops += num("ops")
		tally.fails += num("fails")
		tally.hangs += num("hangs")
		tally.remounts += num("remounts")
		tally.badRemounts += num("badremounts")
		tally.files += num("files")
		tally.bad += num("bad")
		// The VM quit: both sessions end, and nothing of them is left.
		waitState(t, b, unit, "inactive/dead")
		waitState(t, b, "virtiofsd@c.service", "inactive/dead")
		assert.Equal(t, "active/listening", state(t, b, "virtiofsd@x.socket"))
		p := show(t, b, unit, "MainPID", "NFileDescriptorStore")
		assert.Equal(t, "0", p["MainPID"], "boot %d: no shim is left once the VM has quit", boot)
		assert.Equal(t, "0", p["NFileDescriptorStore"], "boot %d: systemd's store holds nothing once the VM has quit", boot)
		assert.Empty(t, virtiofsdProcesses(t, b), "boot %d: no virtiofsd is left once the VM has quit", boot)
		left, _ := b.Run(context.Background(), "pgrep", "-a", "-x", "virtiofsd-shim")
		assert.Empty(t, strings.TrimSpace(left), "boot %d: no shim (nor reload client) is left once the VM has quit", boot)
	}()

	var pace killPace
	var fds []int
	for i, mo := range moments {
		r := strconv.Itoa(i) // the guest's round; 0 is the setup kill
		var before *shimstate.State
		if mo == atSetup {
			// The VM connects at QEMU's start: kill at once.
			require.True(t, pollUntil(ctx, func() bool {
				st, _ := shimstate.Read(statePath)
				before = st
				return st != nil && st.Phase == shimstate.Serving && st.VirtiofsdPID != 0
			}), "boot %d: the VM never connected\n%s", boot, m.Serial())
		} else {
			// A guest that boots and mounts takes a minute or two
			// under TCG; ten is a hang (of QEMU's setup, say).
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Minute)
			ready := pollUntil(rctx, func() bool {
				_, err := os.Stat(filepath.Join(cdir, "ready."+r))
				return err == nil
			})
			rcancel()
			require.True(t, ready, "boot %d round %s: the guest never said ready\n%s", boot, r, m.Serial())
			pace.wait(ctx)
			// Let the round's activity run a second: a pace, not a wait
			// for a condition.
			<-time.After(time.Second)
			before, err = shimstate.Read(statePath)
			require.NoError(t, err)
		}
		require.NotNil(t, before)
		recoveries := 0
		if before.Degraded != nil {
			recoveries = before.Degraded.Recoveries
		}
		shim := show(t, b, unit, "MainPID")["MainPID"]
		k := killAt(ctx, t, b, tg, mo, shim, before.VirtiofsdPID)
		killedAt := k.at
		pace.killed(killedAt)
		tally.kills++
		if k.late {
			tally.byMoment[mo+"-late"]++
		} else {
			tally.byMoment[mo]++
		}
		if k.reloaded {
			tally.reloads++
			tally.reloadsFailed += k.reloadRC
		}

		// The kill has settled when the state shows one more recovery, or,
		// during a reload, when the reload has answered and the other
		// virtiofsd of the two serves (the swap was done before the old
		// one died, or undone before the new one could serve; or, the new
		// one killed, a third one the reload tried again on). A killed
		// shim's has settled when a new shim serves the session again,
		// degraded since the kill.
		var after *shimstate.State
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		settled := pollUntil(sctx, func() bool {
			st, _ := shimstate.Read(statePath)
			if st == nil {
				return false
			}
			after = st
			if tg == shimTarget {
				return st.ShimPID != 0 && strconv.Itoa(st.ShimPID) != shim && st.Phase == shimstate.Serving && st.VirtiofsdPID != 0 &&
					st.Degraded != nil && st.Degraded.Since.After(killedAt)
			}
			if st.Degraded != nil && st.Degraded.Recoveries > recoveries {
				return true
			}
			if !k.reloaded || k.survivor == 0 || st.Phase != shimstate.Serving {
				return false
			}
			if mo == atReloadNew {
				// The reload tries again on a fresh virtiofsd when the
				// new one dies before the swap: the old one or a third
				// serves once it has answered.
				return st.VirtiofsdPID != 0 && st.VirtiofsdPID != k.victim
			}
			return st.VirtiofsdPID == k.survivor
		})
		scancel()
		require.True(t, settled, "boot %d round %s (%s): the session never settled after the kill\n%s", boot, r, mo, status(b, unit))
		crash := after.Degraded != nil && after.Degraded.Recoveries > recoveries
		if tg == shimTarget {
			crash = true
			assert.Equal(t, "the shim was killed", after.Degraded.LastEnd, "boot %d round %s", boot, r)
			shim = strconv.Itoa(after.ShimPID)
			assert.Equal(t, shim, show(t, b, unit, "MainPID")["MainPID"], "boot %d round %s: the new shim is the unit's main process", boot, r)
		}
		said := "kept"
		if crash {
			said = "crash"
			tally.recoveries++
			tally.recovered = append(tally.recovered, time.Since(killedAt))
		} else {
			tally.kept++
		}
		vm, err := m.QMP().Status(ctx)
		require.NoError(t, err)
		assert.Equal(t, "running", vm, "boot %d round %s: the VM runs", boot, r)
		out, err := b.Run(ctx, "sh", "-c", "ls /proc/"+shim+"/fd | wc -l")
		require.NoError(t, err)
		nfd, _ := strconv.Atoi(strings.TrimSpace(out))
		fds = append(fds, nfd)
		logf("round %s (%s): killed %s %d (late: %v), reload exit status %d, %s, shim %s, virtiofsd %d, the shim holds %d fds",
			r, mo, tg, k.victim, k.late, k.reloadRC, said, shim, after.VirtiofsdPID, nfd)
		if k.reloadSaid != "" {
			logf("round %s (%s): systemctl reload said: %s", r, mo, k.reloadSaid)
		}
		if mo == atSetup {
			continue
		}
		// Written whole, then renamed: the guest reads it once it exists.
		done := filepath.Join(cdir, "done."+r)
		require.NoError(t, os.WriteFile(done+".tmp", []byte(said+"\n"), 0o644))
		require.NoError(t, os.Rename(done+".tmp", done))
		require.True(t, pollUntil(ctx, func() bool {
			_, err := os.Stat(filepath.Join(cdir, "checked."+r))
			return err == nil
		}), "boot %d round %s: the guest never checked its files\n%s", boot, r, m.Serial())
		tally.rounds++
		if at, ok := marks.get(r); ok {
			tally.seen++
			if crash {
				tally.served = append(tally.served, at.Sub(killedAt))
			}
		}
	}
	// The shim's descriptors after each kill: the same whatever the
	// number of kills (one more in a round would be a leak).
	if len(fds) > 2 {
		assert.LessOrEqual(t, slices.Max(fds[1:]), fds[1]+2, "boot %d: the shim's fd count after each kill %v does not grow", boot, fds)
	}
}

// kill is what killAt did.
type kill struct {
	victim int
	at     time.Time
	// During a reload: the virtiofsd of the two that was not killed (0
	// when late, or when the shim was killed), the reload's exit status,
	// and late: the old virtiofsd had already gone (the swap was done
	// first), so the new one, then serving, was killed instead.
	survivor   int
	reloaded   bool
	reloadRC   int    // 1: systemctl reload failed
	reloadSaid string // what it printed then
	late       bool
}

// reloadBound is how long a systemctl reload may take to answer after a
// kill: more is a hang.
const reloadBound = 2 * time.Minute

// killAt kills x's virtiofsd (tg) at the moment mo: the serving one (pid),
// or during a systemctl reload the old or the new one (the shim's child
// that is not pid); or the shim (its MainPID), during a reload once the
// new virtiofsd runs. The kill comes from this process, with the box's
// pids mapped to this host's: a shell in the box, forking for each look at
// the shim's children, saw the new virtiofsd only once the swap was done
// on a loaded machine.
func killAt(ctx context.Context, t *testing.T, b *shimbox.Box, tg target, mo moment, shim string, pid int) kill {
	t.Helper()
	shimPID, err := strconv.Atoi(shim)
	require.NoError(t, err, "MainPID %q", shim)
	shimHost, err := hostPID(b, shimPID)
	require.NoError(t, err)
	oldHost, err := hostPID(b, pid)
	require.NoError(t, err)
	k := kill{reloaded: mo == atReloadOld || mo == atReloadNew || mo == atReload}
	victim, other := oldHost, 0
	if tg == shimTarget {
		victim = shimHost
	}
	type answer struct {
		out string
		err error
	}
	var reloaded chan answer
	if k.reloaded {
		reloaded = make(chan answer, 1)
		go func() {
			out, err := b.Systemctl(ctx, "reload", "virtiofsd@x.service")
			reloaded <- answer{out, err}
		}()
		newHost := 0
		deadline := time.Now().Add(20 * time.Second)
		for newHost == 0 && time.Now().Before(deadline) {
			for _, c := range hostChildren(shimHost) {
				if c != oldHost {
					newHost = c
				}
			}
		}
		require.NotZero(t, newHost, "kill at %s: the reload started no new virtiofsd", mo)
		if tg == virtiofsdTarget {
			other = newHost
			if mo == atReloadNew {
				victim, other = newHost, oldHost
			}
		}
	}
	k.victim, k.survivor = boxPID(victim), boxPID(other)
	k.at = time.Now()
	err = syscall.Kill(victim, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) && other != 0 {
		k.late = true
		victim, k.victim, k.survivor = other, k.survivor, 0
		k.at = time.Now()
		err = syscall.Kill(victim, syscall.SIGKILL)
	}
	require.NoError(t, err, "kill %s at %s", tg, mo)
	if reloaded != nil {
		select {
		case a := <-reloaded:
			if a.err != nil {
				k.reloadRC = 1
				said := a.out
				if strings.TrimSpace(said) == "" {
					said = a.err.Error()
				}
				k.reloadSaid = strings.Join(strings.Fields(said), " ")
			}
		case <-time.After(reloadBound):
			t.Fatalf("kill %s at %s: systemctl reload has not returned %v after the kill", tg, mo, reloadBound)
		}
	}
	return k
}

// hostPID maps a pid of the box's pid namespace to this host's.
func hostPID(b *shimbox.Box, pid int) (int, error) {
	boxNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", b.PID()))
	if err != nil {
		return 0, fmt.Errorf("the box's pid namespace: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", n)); err != nil || ns != boxNS {
			continue
		}
		if boxPID(n) == pid {
			return n, nil
		}
	}
	return 0, fmt.Errorf("no process of the box has pid %d there", pid)
}

// boxPID is the pid of a host process in its own (the box's) pid
// namespace, from the last field of its NSpid line; 0 once it is gone.
func boxPID(host int) int {
	if host == 0 {
		return 0
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", host))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[len(f)-1])
				return n
			}
		}
	}
	return 0
}

// hostChildren lists a host process's children, from every thread's
// children file.
func hostChildren(host int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", host))
	var out []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
