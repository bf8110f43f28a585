package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/distro"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/killtree"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/linestamp"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/migration"
	vhostpeer "github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

func init() { register(76, "pause", reportPause) }

var pauseModes = flag.String("pause-modes", "find-paths,file-handles", "the migration `modes` the pause section measures, comma-separated; the first also gets the crashes")

var pauseQuick = flag.Bool("pause-quick", false, "run the pause section small (100 and 1,000 files, 3 swaps, 2 migrations, 3 kills), for development")

// pausePlan is what the pause section measures in one run.
type pausePlan struct {
	points  []int // files the guest holds looked up, in the order it gets them
	swaps   int   // swaps per point and mode
	anchors int   // bare-to-bare migrations per point and mode
	kills   int   // kill -9 of virtiofsd, in the first mode's guest
}

func pausePlanFor(quick bool) pausePlan {
	if quick {
		return pausePlan{points: []int{100, 1000}, swaps: 3, anchors: 2, kills: 3}
	}
	return pausePlan{points: []int{1000, 10000, 100000}, swaps: 20, anchors: 5, kills: 20}
}

// filesPerDir is how many files the host creates per folder of the tree.
const filesPerDir = 1000

// pausePoint is what one mode measured with the guest holding files.
type pausePoint struct {
	files                   int
	listed                  int // lines of the guest's ls -lR: about files + folders
	pause, save, load, rest Sample
	freeze                  Sample // of the rest: disable, settle, GET_VRING_BASE
	prepare                 Sample // before the pause: the announce to the swap's start
	prepared                int    // swaps whose preparation was seen to end
	state                   []int
	down                    Sample // bare-to-bare migrations' downtime, QMP query-migrate's (the source's)
	gap                     Sample // the same migrations from the guest's side: STOP on the source to RESUME on the destination
	through                 Sample // migrations into and out of the front (not the anchor)
}

// pauseCrash is issue 25's figure.
type pauseCrash struct {
	answered Sample // kill -9 to the guest's first answered request
	took     Sample // the front's recovery: noticing the death to the kicks
	respawn  Sample // of which starting the fresh virtiofsd
	hangs    string
	errors   string // the guest's failed umounts and mounts
}

// reportPause measures the pause a guest sees when the front swaps its
// virtiofsd (issue 24), against the downtime of a live migration between
// two bare virtiofsds of the same guest holding the same inodes, and the
// time from a virtiofsd kill to the guest's first answered request
// (issue 25).
func reportPause(t *testing.T, s *section) {
	s.title = "The pause a guest sees in a reload, against a live migration; a virtiofsd crash (Debian 13 leg)"
	plan := pausePlanFor(*pauseQuick)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	handles, handlesWhy := fdRoom(t, plan.points[len(plan.points)-1])
	tree, err := distro.Debian13(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := tree.RustVirtiofsd()
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := tree.QEMU()
	if err != nil {
		t.Fatal(err)
	}
	img, err := guest.Prepare(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	loadBefore := loadavg()
	started := time.Now()
	modes := strings.Split(*pauseModes, ",")
	points := map[string][]*pausePoint{}
	var crash *pauseCrash
	for i, mode := range modes {
		kills := 0
		if i == 0 {
			kills = plan.kills
		}
		// A subtest per guest: whatever it started ends with it, even when
		// it fails, before the next guest boots. What it measured is
		// reported either way.
		t.Run(mode, func(t *testing.T) {
			r := &pauseRig{t: t, ctx: ctx, bin: bin, qemu: qemu, img: img, mode: mode, handles: handles, plan: plan, kills: kills}
			ps, c, err := r.run()
			points[mode] = ps
			if c != nil {
				crash = c
			}
			if err != nil {
				t.Error(err)
			}
		})
	}

	s.printf("One run, one guest boot per migration mode (QEMU %s, TCG, 512 MiB; the Rust virtiofsd of the Debian 13\n"+
		"tree, run on this host through that tree's loader with the shim's argv plus `--migration-mode=MODE`).\n"+
		"The test process runs internal/front's Front between the guest's QEMU and virtiofsd, as the shim does,\n"+
		"and calls Front.Swap, which is what `systemctl reload` does in the shim (the client and D-Bus round\n"+
		"trips of a real reload are outside the pause). The host creates the files in the shared folder (empty\n"+
		"files, %d per folder: faster than creating them in the guest under TCG), and the guest then runs\n"+
		"`ls -lR` over them, which looks each one up: the guest's kernel keeps them looked up (dentries, no open\n"+
		"fds), as the state's size shows. The points are incremental in one boot: %s files.\n\n",
		firstLine(qemuVersion(ctx, qemu)), filesPerDir, joinInts(plan.points))
	if handles != "" {
		s.printf("**Every virtiofsd of this section ran with `--inode-file-handles=%s`** (the key INODE_FILE_HANDLES): %s,\n"+
			"which the shim's default argv (no file handles) needs in find-paths mode, so it keeps a file handle per inode\n"+
			"instead. The shipped unit raises the limit (LimitNOFILE=1000000) where the machine allows it.\n\n", handles, handlesWhy)
	}
	s.printf("At each point: %d swaps onto a fresh virtiofsd (started and given the setup before the pause, as the\n"+
		"shim does). Before each, as the shim's reload does, the swap is announced to the old virtiofsd (Front.Announce:\n"+
		"F_LOG_ALL, as when a live migration starts), which then prepares its save (each inode's path or file handle)\n"+
		"in a thread while the guest runs on; the swap starts once that thread has ended (the old virtiofsd's threads\n"+
		"back to their count before the announce), at most 10 s after the announce. \"Prepare\" is that time, from the\n"+
		"announce to the swap's start, the new virtiofsd's start included; the guest is served throughout it.\n"+
		"The pause is SwapResult.Pause: from disabling the old virtiofsd's rings to kicking the new one's;\n"+
		"save and load are virtiofsd's own SAVE and LOAD (SET_DEVICE_STATE_FD to CHECK_DEVICE_STATE); the rest is the\n"+
		"front's share, computed per swap: the freeze (SwapResult.Freeze: disabling the rings, the %v settle wait,\n"+
		"GET_VRING_BASE), then the new rings' setup and kicks.\n\n", plan.swaps, front.DefaultSettle)
	s.printf("The anchor, in the same boot once the swaps (and crashes) are done: the guest is live-migrated off the\n"+
		"front onto a QEMU whose device is connected straight to a bare virtiofsd; then, for each point, it mounts\n"+
		"the share again (dropping what it held), lists as many files (`ls -lR` of that many folders) and is\n"+
		"migrated %d times between bare virtiofsds (QMP `migrate` to a unix socket, the destination started with\n"+
		"`-incoming defer`). Two figures: QMP query-migrate's `downtime` (ms), which QEMU takes on the source;\n"+
		"and the time the guest was\n"+
		"stopped, from the source's STOP event to the destination's RESUME (the events' timestamps, the host's\n"+
		"clock), virtiofsd's LOAD on the destination included, as the pause includes it. The goal is judged on\n"+
		"the second. The anchor comes last\n"+
		"because its first migration takes the guest off the front for good.\n\n", plan.anchors)
	s.printf("| mode | files (ls -lR lines) | swaps | prepare median (seen to end) | pause median | p99 | save median | p99 | load median | p99 | rest median | p99 | of which freeze, median | goal rest <= 10 ms | state median | bare migrations | downtime median (QEMU's) | the guest stopped, median (STOP to RESUME) | pause / guest stopped | goal |\n")
	s.printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, mode := range modes {
		for _, p := range points[mode] {
			ratio := 0.0
			if d := p.gap.Median(); d > 0 {
				ratio = float64(p.pause.Median()) / float64(d)
			}
			g := "(no goal at this size)"
			switch {
			case len(p.gap) == 0 || len(p.pause) == 0:
				g = "(not measured)"
			case p.files == 1000:
				g = "<= 0.25x: " + goal(ratio <= 0.25)
			case p.files == 10000:
				g = "<= 0.5x: " + goal(ratio <= 0.5)
			}
			s.printf("| %s | %d (%d) | %d | %s (%d) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %.2fx | %s |\n",
				mode, p.files, p.listed, len(p.pause), ms(p.prepare.Median()), p.prepared, ms(p.pause.Median()), ms(p.pause.Quantile(0.99)),
				ms(p.save.Median()), ms(p.save.Quantile(0.99)), ms(p.load.Median()), ms(p.load.Quantile(0.99)),
				ms(p.rest.Median()), ms(p.rest.Quantile(0.99)), ms(p.freeze.Median()), goal(p.rest.Median() <= 10*time.Millisecond),
				bytesString(medianInt(p.state)), len(p.down), msInt(p.down.Median()), ms(p.gap.Median()), ratio, g)
			t.Logf("pause, %s, %d files: pause %v save %v load %v state %v; downtime %v; stopped %v; through the front %v",
				mode, p.files, p.pause, p.save, p.load, p.state, p.down, p.gap, p.through)
		}
	}
	s.printf("\nThe announce moves virtiofsd's preparation out of the pause, in both modes: without it, virtiofsd's SAVE\n" +
		"collects each inode's path (find-paths) or file handle (file-handles) inside the pause (DESIGN.md, \"vhost-user\n" +
		"front\": 120-220 ms at 5,000 inodes in find-paths mode). What is left in the pause is virtiofsd's serializing\n" +
		"(SAVE) and, above all in file-handles mode, its LOAD, which opens every inode again.\n")
	s.printf("\nThe migrations off the front onto a bare virtiofsd (not the anchor) had downtimes of %s.\n", throughSummary(modes, points))
	if crash != nil {
		s.printf("\n### A virtiofsd crash (issue 25)\n\n"+
			"In the %s guest, after its swaps: the guest unmounts and mounts the share (it then holds nothing\n"+
			"open or looked up there), and each round lists the share's root in a loop (`ls`, a READDIR each time)\n"+
			"until one fails. The host kills virtiofsd (SIGKILL to it and its sandboxed child) half a second into the\n"+
			"round; the front recovers the session onto a fresh virtiofsd (Config.Respawn, the shim's crash path)\n"+
			"with the rings restarted at their used indexes, and the guest's next request is answered (EBADF: the\n"+
			"fresh virtiofsd never saw FUSE_INIT). The guest prints a line on its console at once, then unmounts\n"+
			"and mounts the share for the next round. \"To the first answered request\" is from the kill to that\n"+
			"console line reaching the host (the guest's own loop adds up to one `ls`, tens of ms under TCG).\n\n", modes[0])
		s.printf("| kills | kill to the first answered request, median | p99 | max | the front's recovery (death noticed to kicks), median | p99 | of which starting virtiofsd, median | guest operations that hung | failed umounts or mounts |\n|---|---|---|---|---|---|---|---|---|\n")
		s.printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", len(crash.answered),
			ms(crash.answered.Median()), ms(crash.answered.Quantile(0.99)), ms(crash.answered.Max()),
			ms(crash.took.Median()), ms(crash.took.Quantile(0.99)), ms(crash.respawn.Median()), crash.hangs, crash.errors)
		t.Logf("crash: answered %v; front %v; respawn %v", crash.answered, crash.took, crash.respawn)
	}
	s.printf("\nLoad average (1, 5, 15 min) before this section %s, after %s (its own guest and virtiofsds count about\n"+
		"2); the section took %v. Read the medians and ratios as this run's, the p99s as upper bounds.\n",
		loadBefore, loadavg(), time.Since(started).Round(time.Second))
	if *pauseQuick {
		s.printf("\nThis was the quick run (`-pause-quick`), for development: too small for the goals.\n")
	}
	s.measuredBy("pause", "pause_test.go")
	s.printf("The whole section took about 20 minutes under TCG on 2 loaded cores: give it `-timeout 60m`. For\n" +
		"development, `-pause-quick` after `-args` runs it small (100 and 1,000 files, 3 swaps, 2 migrations, 3 kills).\n")
}

// fdRoom lets each virtiofsd hold an O_PATH fd per inode of the largest
// point (it raises its own soft limit up to the hard one), raising the
// hard limit (put back when the section ends). Where the hard limit
// cannot be raised (no CAP_SYS_RESOURCE, as in this machine's container)
// and is too low, it returns the INODE_FILE_HANDLES value that spares
// those fds (virtiofsd then keeps a file handle per inode), and why.
func fdRoom(t *testing.T, inodes int) (handles, why string) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	need := uint64(inodes) + 10000
	if old.Max >= need {
		return "", ""
	}
	want := syscall.Rlimit{Cur: old.Cur, Max: max(need, 1<<20)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err == nil {
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
		return "", ""
	}
	return "prefer", fmt.Sprintf("the hard limit of open files here is %d and cannot be raised (%v), too few for an O_PATH fd per inode of %d", old.Max, err, inodes)
}

// pauseRig is one guest's life: a chain of QEMUs it migrates along, each
// behind a Front or connected to a bare virtiofsd.
type pauseRig struct {
	t         *testing.T
	ctx       context.Context
	bin, qemu string
	img       *guest.Image
	mode      string
	handles   string // INODE_FILE_HANDLES, "" for virtiofsd's default
	plan      pausePlan
	kills     int

	dir, share string
	script     string
	console    *lineStamps
	cur        *hop

	mu         sync.Mutex // guards n, recoveries, and each hop's vfsd
	n          int
	recoveries []front.Recovery
}

// hop is one QEMU of the chain.
type hop struct {
	m     *guest.Machine
	front *front.Front // nil: connected to a bare virtiofsd
	ran   chan error
	vfsd  *benchVirtiofsd
}

// run boots the guest, measures each point and the crashes, and lets the
// guest power off.
func (r *pauseRig) run() ([]*pausePoint, *pauseCrash, error) {
	var err error
	if r.dir, err = os.MkdirTemp("/var/tmp", "pause"); err != nil { // short: socket paths
		return nil, nil, err
	}
	r.t.Cleanup(func() { os.RemoveAll(r.dir) })
	r.share = filepath.Join(r.dir, "share")
	if err := os.MkdirAll(filepath.Join(r.share, "tree"), 0o755); err != nil {
		return nil, nil, err
	}
	r.script = pauseScript(r.plan.points, r.kills)
	r.console = newLineStamps("CRASHSEEN ")
	h, err := r.frontHop(false)
	if err != nil {
		return nil, nil, err
	}
	r.cur = h
	if err := waitFile(filepath.Join(r.share, "up"), 4*time.Minute); err != nil {
		return nil, nil, fmt.Errorf("%w; console:\n%s", err, h.m.Serial())
	}
	// Behind the front: each point's files are looked up, then swapped
	// under; then the crashes, still behind the front. The anchor comes
	// last, since its first migration takes the guest off the front: the
	// guest moves onto a bare virtiofsd and, for each point, mounts the
	// share again, looks up as many files and is migrated between bare ones.
	var points []*pausePoint
	made := 0
	for _, files := range r.plan.points {
		p := &pausePoint{files: files}
		points = append(points, p)
		if err := makeFiles(filepath.Join(r.share, "tree"), made, files); err != nil {
			return points, nil, err
		}
		made = files
		if p.listed, err = r.lookUp("look.", files); err != nil {
			return points, nil, err
		}
		if err := r.swaps(p); err != nil {
			return points, nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(r.share, "crash"), nil, 0o644); err != nil {
		return points, nil, err
	}
	var crash *pauseCrash
	if r.kills > 0 {
		if crash, err = r.crashes(); err != nil {
			return points, crash, err
		}
	}
	for i, p := range points {
		if i == 0 {
			if err := r.migrateOut(p); err != nil {
				return points, crash, err
			}
		}
		if _, err := r.lookUp("again.", p.files); err != nil {
			return points, crash, err
		}
		if err := r.anchors(p); err != nil {
			return points, crash, err
		}
	}
	if err := os.WriteFile(filepath.Join(r.share, "end"), nil, 0o644); err != nil {
		return points, crash, err
	}
	if _, err := r.cur.m.Wait(); err != nil {
		return points, crash, fmt.Errorf("the guest finishes: %w", err)
	}
	// A migration's destination prints only what follows it: the script's
	// result is the boot's console followed by the last QEMU's.
	res, err := guest.ParseSerial(h.m.Serial() + "\n" + r.cur.m.Serial())
	if err != nil {
		return points, crash, err
	}
	if res.Values["done"] != "yes" {
		return points, crash, fmt.Errorf("the guest did not finish its script:\n%s", res.Serial)
	}
	if crash != nil {
		crash.hangs, crash.errors = res.Values["hangs"], res.Values["errors"]
	}
	if r.cur.front != nil {
		if err := <-r.cur.ran; err != nil {
			return points, crash, fmt.Errorf("the front ended: %w", err)
		}
	}
	return points, crash, nil
}

// pauseScript is the guest's script: it mounts the share, and for each
// point waits for look.N, lists the tree (ls -lR, which looks up every
// file) and writes the count of lines to looked.N. Then it waits for
// crash, and with kills, remounts the share (holding nothing there) and
// runs kills rounds: ready.R, ls of the root until one fails, "CRASHSEEN
// R" on the console, umount and mount. Then for each point it waits for
// again.N, mounts the share again (dropping what it held) and lists as
// many files (relooked.N); and it finishes once end appears.
//
//	RESULT hangs=N   crash-round operations killed after 10 s (want 0)
//	RESULT errors=N  failed umounts or mounts (want 0)
//	RESULT done=yes
func pauseScript(points []int, kills int) string {
	var b strings.Builder
	b.WriteString(`m=/mnt/fs
mount -t virtiofs fs $m || exit 1
cd /
echo up >$m/up
`)
	for _, k := range points {
		fmt.Fprintf(&b, `while [ ! -e $m/look.%[1]d ]; do sleep 0.5; done
n=$(ls -lR $m/tree | wc -l)
echo "LOOKED %[1]d $n"
echo $n >$m/looked.%[1]d
`, k)
	}
	fmt.Fprintf(&b, `while [ ! -e $m/crash ]; do sleep 0.5; done
hangs=0
errors=0
op() { timeout -s KILL 10 "$@"; rc=$?; [ $rc -eq 137 ] && { hangs=$((hangs+1)); echo "GUEST HANG round $r: $*"; }; return $rc; }
r=0
if [ %[1]d -gt 0 ]; then
	op umount $m || errors=$((errors+1))
	op mount -t virtiofs fs $m || exit 1
fi
while [ $r -lt %[1]d ]; do
	r=$((r+1))
	echo $r >$m/ready.$r
	n=0
	while op ls $m >/dev/null 2>&1; do n=$((n+1)); [ $n -lt 20000 ] || break; done
	echo "CRASHSEEN $r"
	op umount $m || { errors=$((errors+1)); echo "GUEST ERROR round $r: umount"; }
	op mount -t virtiofs fs $m || { errors=$((errors+1)); echo "GUEST ERROR round $r: mount"; break; }
done
`, kills)
	for _, k := range points {
		var dirs []string
		for d := 0; d*filesPerDir < k; d++ {
			dirs = append(dirs, fmt.Sprintf("$m/tree/d%03d", d))
		}
		fmt.Fprintf(&b, `while [ ! -e $m/again.%[1]d ]; do sleep 0.5; done
umount $m || errors=$((errors+1))
mount -t virtiofs fs $m || exit 1
n=$(ls -lR %[2]s | wc -l)
echo "RELOOKED %[1]d $n"
echo $n >$m/relooked.%[1]d
`, k, strings.Join(dirs, " "))
	}
	b.WriteString(`while [ ! -e $m/end ]; do sleep 0.5; done
echo "RESULT hangs=$hangs"
echo "RESULT errors=$errors"
echo "RESULT done=yes"
`)
	return b.String()
}

// makeFiles creates files from..to-1 under tree, filesPerDir per folder.
func makeFiles(tree string, from, to int) error {
	for i := from; i < to; i++ {
		d := filepath.Join(tree, fmt.Sprintf("d%03d", i/filesPerDir))
		if i%filesPerDir == 0 || i == from {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%04d", i%filesPerDir)))
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// lookUp has the guest list files (signal "look." or "again."), and
// returns its line count.
func (r *pauseRig) lookUp(signal string, files int) (int, error) {
	if err := os.WriteFile(filepath.Join(r.share, signal+strconv.Itoa(files)), nil, 0o644); err != nil {
		return 0, err
	}
	done := filepath.Join(r.share, map[string]string{"look.": "looked.", "again.": "relooked."}[signal]+strconv.Itoa(files))
	if err := waitFile(done, 30*time.Minute); err != nil {
		return 0, fmt.Errorf("%w; console:\n%s", err, r.cur.m.Serial())
	}
	var b []byte
	var err error
	for range 50 { // the guest may not have written its line yet
		if b, err = os.ReadFile(done); err == nil && len(bytes.TrimSpace(b)) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return strconv.Atoi(string(bytes.TrimSpace(b)))
}

// swaps runs the point's swaps on the current hop (behind a Front).
func (r *pauseRig) swaps(p *pausePoint) error {
	h := r.cur
	for i := range r.plan.swaps {
		time.Sleep(300 * time.Millisecond) // the guest polls its share between swaps
		// As the shim's reload does (service.announceSwap): announce the
		// swap, start the new virtiofsd, and wait until the old one's
		// preparation thread has ended, at most 10 s after the announce.
		old := h.serving(&r.mu)
		pids := proctree.Tree(old.cmd.Process.Pid)
		baseline := proctree.TreeThreads(pids)
		announced := time.Now()
		if err := h.front.Announce(r.ctx); err != nil {
			return fmt.Errorf("%d files, swap %d: announce: %w", p.files, i, err)
		}
		next, _, err := r.startVirtiofsd(true)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithDeadline(r.ctx, announced.Add(10*time.Second))
		if proctree.WaitThreads(pctx, pids, baseline, 2*time.Millisecond) {
			p.prepared++
		}
		cancel()
		p.prepare = append(p.prepare, time.Since(announced))
		res, err := h.front.Swap(r.ctx, next.conn)
		if err != nil {
			return fmt.Errorf("%d files, swap %d: %w\nold virtiofsd:\n%s\nnew virtiofsd:\n%s", p.files, i, err, old.stderr(), next.stderr())
		}
		r.mu.Lock()
		h.vfsd = next
		r.mu.Unlock()
		p.pause = append(p.pause, res.Pause)
		p.save = append(p.save, res.Save)
		p.load = append(p.load, res.Load)
		p.rest = append(p.rest, res.Pause-res.Save-res.Load)
		p.freeze = append(p.freeze, res.Freeze)
		p.state = append(p.state, res.StateSize)
	}
	r.t.Logf("%s, %d files: pause %v, save %v, load %v, state %v", r.mode, p.files, p.pause, p.save, p.load, p.state)
	return nil
}

// migrateOut moves the guest off the Front onto a bare virtiofsd.
func (r *pauseRig) migrateOut(p *pausePoint) error {
	dst, err := r.bareHop()
	if err != nil {
		return err
	}
	info, err := r.migrate(dst)
	if err != nil {
		return fmt.Errorf("migration off the front: %w", err)
	}
	p.through = append(p.through, time.Duration(info.Downtime)*time.Millisecond)
	return nil
}

// anchors migrates the guest between bare virtiofsds plan.anchors times.
func (r *pauseRig) anchors(p *pausePoint) error {
	for i := range r.plan.anchors {
		dst, err := r.bareHop()
		if err != nil {
			return err
		}
		info, err := r.migrate(dst)
		if err != nil {
			return fmt.Errorf("%d files, migration %d: %w", p.files, i, err)
		}
		p.down = append(p.down, time.Duration(info.Downtime)*time.Millisecond)
		p.gap = append(p.gap, info.gap)
	}
	r.t.Logf("%s, %d files: bare migrations' downtime %v, STOP to RESUME %v", r.mode, p.files, p.down, p.gap)
	return nil
}

// migrated is a migration's QMP figures, and how long the guest was
// stopped: from the source's STOP event to the destination's RESUME (the
// host's clock, as both QEMUs stamp their events). query-migrate's
// downtime is the source's own figure; the destination's work before the
// guest runs again, virtiofsd's LOAD among it, is in the gap.
type migrated struct {
	migration.Info
	gap time.Duration
}

// migrate moves the guest from the current hop to dst, quits the source's
// QEMU and waits for its session to end.
func (r *pauseRig) migrate(dst *hop) (migrated, error) {
	src := r.cur
	ctx, cancel := context.WithTimeout(r.ctx, 15*time.Minute)
	defer cancel()
	// A socket of its own per migration: a QEMU that received one removes
	// its socket's path when it is done, which may be after the next
	// destination listens there.
	sock := filepath.Join(r.dir, fmt.Sprintf("m%d.sock", r.next()))
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return migrated{}, err
	}
	uri := "unix:" + sock
	if err := dst.m.QMP().Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return migrated{}, err
	}
	if err := src.m.QMP().Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return migrated{}, err
	}
	var res migrated
	info := &res.Info
	for {
		*info = migration.Info{}
		if err := src.m.QMP().Execute(ctx, "query-migrate", nil, info); err != nil {
			return res, err
		}
		if info.Status == "completed" {
			break
		}
		if info.Status == "failed" || info.Status == "cancelled" {
			return res, fmt.Errorf("migration %s: %s\nsource virtiofsd:\n%s\ndestination virtiofsd:\n%s",
				info.Status, info.ErrorDesc, src.serving(&r.mu).stderr(), dst.serving(&r.mu).stderr())
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("migration still %q: %w", info.Status, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The destination runs the guest once it has loaded the state: its
	// RESUME event comes with the answer that says so.
	for {
		st, err := dst.m.QMP().Status(ctx)
		if err != nil {
			return res, err
		}
		if st == "running" {
			break
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("the destination is still %q after the migration: %w", st, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop, ok1 := src.m.QMP().LastEvent("STOP")
	resume, ok2 := dst.m.QMP().LastEvent("RESUME")
	if !ok1 || !ok2 {
		return res, fmt.Errorf("no STOP on the source (%v) or no RESUME on the destination (%v)", ok1, ok2)
	}
	res.gap = resume.At.Sub(stop.At)
	r.cur = dst
	if err := src.m.QMP().Execute(ctx, "quit", nil, nil); err != nil {
		return res, fmt.Errorf("quit the source's QEMU: %w", err)
	}
	_, _ = src.m.Wait() // it quit; whether its script ended is the destination's
	if src.front != nil {
		select {
		case err := <-src.ran:
			if err != nil {
				return res, fmt.Errorf("the source's front: %w", err)
			}
		case <-ctx.Done():
			return res, fmt.Errorf("the source's front still runs after its QEMU quit")
		}
	}
	return res, nil
}

// crashes kills the serving virtiofsd once per guest round.
func (r *pauseRig) crashes() (*pauseCrash, error) {
	h := r.cur
	c := &pauseCrash{}
	for i := 1; i <= r.kills; i++ {
		if err := waitFile(filepath.Join(r.share, "ready."+strconv.Itoa(i)), 3*time.Minute); err != nil {
			return c, fmt.Errorf("round %d: %w; console:\n%s", i, err, h.m.Serial())
		}
		<-time.After(500 * time.Millisecond) // a pace: the guest's loop runs
		victim := h.serving(&r.mu)
		killed := time.Now()
		_ = killtree.Kill(victim.cmd.Process.Pid)
		for {
			select {
			case l := <-r.console.c:
				if l.line != "CRASHSEEN "+strconv.Itoa(i) {
					continue
				}
				c.answered = append(c.answered, l.at.Sub(killed))
			case <-time.After(time.Minute):
				return c, fmt.Errorf("round %d: the guest got no answer within a minute of the kill; console:\n%s", i, h.m.Serial())
			}
			break
		}
	}
	r.mu.Lock()
	for _, rec := range r.recoveries {
		c.took = append(c.took, rec.Took)
		c.respawn = append(c.respawn, rec.Respawn)
	}
	r.mu.Unlock()
	return c, nil
}

// guestSpec is a QEMU of the chain on the vhost-user socket sock.
func (r *pauseRig) guestSpec(sock string, n int, incoming bool) guest.Spec {
	spec := guest.Spec{
		QEMU: r.qemu, Script: r.script, Timeout: 150 * time.Minute, WorkDir: r.dir, Console: r.console,
		Shares: []guest.Share{{Tag: "fs", Socket: sock}},
		QMP:    filepath.Join(r.dir, fmt.Sprintf("q%d.qmp", n)),
	}
	if incoming {
		spec.Incoming = "defer"
	}
	return spec
}

// start starts a QEMU of the chain; it is killed, if still running, when
// the test ends.
func (r *pauseRig) start(spec guest.Spec) (*guest.Machine, error) {
	m, err := guest.Start(r.ctx, r.img, spec)
	if err != nil {
		return nil, err
	}
	r.t.Cleanup(func() {
		m.Kill()
		_, _ = m.Wait()
	})
	return m, nil
}

// frontHop starts a QEMU (booting, or a migration's destination) whose
// device is served through a Front, with a virtiofsd behind it.
func (r *pauseRig) frontHop(incoming bool) (*hop, error) {
	n := r.next()
	vmSock := filepath.Join(r.dir, fmt.Sprintf("f%d.sock", n))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: vmSock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	v, _, err := r.startVirtiofsd(true)
	if err != nil {
		return nil, err
	}
	// QEMU waits for the device's first replies before its QMP monitor
	// answers (guest.Start waits for that): the front runs first.
	h := &hop{ran: make(chan error, 1), vfsd: v}
	ready := make(chan error, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			ready <- fmt.Errorf("QEMU connects to the front: %w", err)
			return
		}
		h.front = front.New(c, v.conn, front.Config{Respawn: r.respawner(h), Recovered: r.recovered})
		ready <- nil
		h.ran <- h.front.Run(r.ctx)
	}()
	m, err := r.start(r.guestSpec(vmSock, n, incoming))
	if err != nil {
		ln.Close()
		return nil, errors.Join(err, <-ready)
	}
	select {
	case err = <-ready:
	case <-time.After(2 * time.Minute):
		ln.Close()
		err = <-ready
	}
	if err != nil {
		return nil, err
	}
	h.m = m
	return h, nil
}

// bareHop starts a migration's destination QEMU connected straight to a
// bare virtiofsd's socket.
func (r *pauseRig) bareHop() (*hop, error) {
	n := r.next()
	v, sock, err := r.startVirtiofsd(false)
	if err != nil {
		return nil, err
	}
	m, err := r.start(r.guestSpec(sock, n, true))
	if err != nil {
		return nil, err
	}
	return &hop{m: m, vfsd: v}, nil
}

// respawner gives h's Front a fresh virtiofsd after a crash, up to the
// kills planned (and a few more), then gives up.
func (r *pauseRig) respawner(h *hop) func(context.Context, error) (*net.UnixConn, error) {
	spawned := 0
	return func(_ context.Context, cause error) (*net.UnixConn, error) {
		if spawned >= r.kills+3 {
			return nil, fmt.Errorf("more crashes than the bench made (%d): %w", r.kills, cause)
		}
		spawned++
		v, _, err := r.startVirtiofsd(true)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		h.vfsd = v
		r.mu.Unlock()
		return v.conn, nil
	}
}

func (r *pauseRig) recovered(rec front.Recovery) {
	r.mu.Lock()
	r.recoveries = append(r.recoveries, rec)
	r.mu.Unlock()
}

func (r *pauseRig) next() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	return r.n
}

// serving is the virtiofsd that serves the hop now.
func (h *hop) serving(mu *sync.Mutex) *benchVirtiofsd {
	mu.Lock()
	defer mu.Unlock()
	return h.vfsd
}

// benchVirtiofsd is one virtiofsd the section started.
type benchVirtiofsd struct {
	cmd  *exec.Cmd
	conn *net.UnixConn // nil when QEMU connects to it directly
	log  string
	done chan error
}

func (v *benchVirtiofsd) stderr() string {
	if v == nil {
		return ""
	}
	b, _ := os.ReadFile(v.log)
	return string(b)
}

// startVirtiofsd starts a virtiofsd in the rig's mode with the shim's argv
// on a listening socket of its own (fd 3). With connect, the bench
// connects to it (for a Front) and removes the socket's file; otherwise
// the socket is returned for QEMU. It is killed, if still running, when
// the test ends.
func (r *pauseRig) startVirtiofsd(connect bool) (*benchVirtiofsd, string, error) {
	n := r.next()
	sock := filepath.Join(r.dir, fmt.Sprintf("v%d.sock", n))
	lf, err := vhostpeer.Listen(sock)
	if err != nil {
		return nil, "", err
	}
	defer lf.Close()
	args, err := virtiofsd.Args(virtiofsd.Rust, virtiofsd.Options{SharedDir: r.share, MigrationMode: r.mode, InodeFileHandles: r.handles})
	if err != nil {
		return nil, "", err
	}
	v := &benchVirtiofsd{cmd: exec.Command(r.bin, args...), log: filepath.Join(r.dir, fmt.Sprintf("v%d.log", n)), done: make(chan error, 1)}
	logf, err := os.Create(v.log)
	if err != nil {
		return nil, "", err
	}
	defer logf.Close()
	v.cmd.Env = virtiofsd.ChildEnv(os.Environ(), virtiofsd.Rust)
	v.cmd.ExtraFiles = []*os.File{lf}
	v.cmd.Stderr = logf
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start virtiofsd: %w", err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	r.t.Cleanup(func() {
		_ = killtree.Kill(v.cmd.Process.Pid)
		<-v.done
	})
	if !connect {
		return v, sock, nil
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, "", fmt.Errorf("connect to virtiofsd's private socket: %w", err)
	}
	v.conn = c
	return v, sock, os.Remove(sock)
}

// lineStamps is a console writer that hands over, with the time it
// arrived, each line that starts with prefix.
type lineStamps struct {
	*linestamp.Writer
	c chan stampedLine
}

type stampedLine struct {
	line string
	at   time.Time
}

func newLineStamps(prefix string) *lineStamps {
	l := &lineStamps{c: make(chan stampedLine, 256)}
	l.Writer = linestamp.New(func(line string, at time.Time) {
		if strings.HasPrefix(line, prefix) {
			select {
			case l.c <- stampedLine{line, at}:
			default: // nobody reads: dropped
			}
		}
	})
	return l
}

func qemuVersion(ctx context.Context, qemu string) string {
	out, err := exec.CommandContext(ctx, qemu, "--version").Output()
	if err != nil {
		return "10 (its --version failed: " + err.Error() + ")"
	}
	return strings.TrimPrefix(string(out), "QEMU emulator version ")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func joinInts(v []int) string {
	var s []string
	for _, i := range v {
		s = append(s, strconv.Itoa(i))
	}
	return strings.Join(s, " → ")
}

func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	c := slices.Clone(v)
	slices.Sort(c)
	return c[(len(c)-1)/2]
}

func bytesString(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func throughSummary(modes []string, points map[string][]*pausePoint) string {
	var all Sample
	for _, m := range modes {
		for _, p := range points[m] {
			all = append(all, p.through...)
		}
	}
	if len(all) == 0 {
		return "none measured"
	}
	return fmt.Sprintf("a median of %s (min %s, max %s, %d migrations)", msInt(all.Median()), msInt(all.Min()), msInt(all.Max()), len(all))
}

func TestFilesAreCreatedIncrementallyAThousandPerFolder(t *testing.T) {
	tree := t.TempDir()
	if err := makeFiles(tree, 0, 1500); err != nil {
		t.Fatal(err)
	}
	if err := makeFiles(tree, 1500, 2001); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, d := range []string{"d000", "d001", "d002"} {
		es, err := os.ReadDir(filepath.Join(tree, d))
		if err != nil {
			t.Fatal(err)
		}
		counts[d] = len(es)
	}
	if want := map[string]int{"d000": 1000, "d001": 1000, "d002": 1}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("files per folder: %v, want %v", counts, want)
	}
}

func TestConsoleLinesWithTheMarkAreHandedOverWholeAcrossWrites(t *testing.T) {
	l := newLineStamps("CRASHSEEN ")
	for _, w := range []string{"boot\r\nCRASH", "SEEN 1\r\nother\n", "CRASHSEEN 2\n"} {
		if _, err := l.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	close(l.c)
	var got []string
	for m := range l.c {
		got = append(got, m.line)
	}
	if want := []string{"CRASHSEEN 1", "CRASHSEEN 2"}; !slices.Equal(got, want) {
		t.Errorf("marked lines %q, want %q", got, want)
	}
}
