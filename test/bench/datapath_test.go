package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func init() { register(85, "datapath", reportDataPath) }

var (
	dataPathRuns = flag.Int("datapath-runs", 5, "guest boots per variant of the data-path section (interleaved)")
	// dataPathExtraRuns: the variants that explain (thread pools, the sandbox
	// lines on a bare unit) get fewer boots than the three compared.
	dataPathExtraRuns = flag.Int("datapath-extra-runs", 3, "guest boots per explaining variant of the data-path section (0: none)")
	dataPathSize      = flag.String("datapath-size", "full", "sizes of the data-path workload: full (guestload.Default) or tiny")
	dataPathVariants  = flag.String("datapath-variants", "", "comma-separated variant keys of the data-path section (empty: all; bare is always measured)")
	dataPathDebug     = flag.Bool("datapath-debug", false, "log each CPU reading of the data-path section")
	dataPathLegs      = flag.String("datapath-legs", "debian12,debian13", "platform legs of the data-path section")
	dataPathShell     = flag.Bool("datapath-shell", true, "run the shell workload (guestload.ShellScript) in each boot of the data-path section, before test/guestload's")
)

// dpCaches are the cache modes of the two shares of every variant: the
// metadata groups and streaming run on auto, streaming again on never.
var dpCaches = []string{"auto", "never"}

// dpVariant is one way of serving the two shares.
type dpVariant struct {
	name    string
	key     string // instance prefix, or the bare template's
	bare    bool   // a bare unit pair (bareTemplate), not the shim's units
	extra   bool   // an explaining variant (fewer runs)
	conf    string // more config lines of the shim's instances
	sandbox bool   // a bare unit carrying the shipped unit's sandbox lines
	plain   bool   // the shim's units without the shipped sandbox lines
	args    string // more arguments of a bare unit's virtiofsd
	nofile  bool   // a bare unit with systemd's default LimitNOFILE= (no drop-in of the shipped unit's)
}

func (v dpVariant) unit(cache string) string {
	if v.bare {
		return v.key + "-" + cache + "@x.service"
	}
	return "virtiofsd@" + v.key + "-" + cache + ".service"
}

func (v dpVariant) socket(b *shimbox.Box, cache string) string {
	if v.bare {
		return b.Path("/run/" + v.key + "-" + cache + "/x.sock")
	}
	return b.Socket(v.key + "-" + cache)
}

func (v dpVariant) share(b *shimbox.Box, cache string) string {
	return filepath.Join(b.Root, v.key+"-"+cache)
}

// dpRun is what one guest boot measured: per share/group, the guest's time,
// the service's CPU time (its cgroup: the shim and virtiofsd), virtiofsd's
// own (its process tree: the cgroup's but the shim's; ticks: the same from
// /proc/PID/stat, coarser), and the number of operations.
type dpRun struct {
	guest, cpu, tree, ticks map[string]time.Duration
	n                       map[string]int
	unit                    map[string]string
	shell                   shellRun // the shell workload's figures (-datapath-shell)
}

// metric is one figure of a dpRun.
type metric int

const (
	mTree   metric = iota // virtiofsd's process tree's CPU time
	mCgroup               // the service's cgroup's CPU time (the shim too)
	mGuest                // the guest's own clock
	mTicks                // virtiofsd's process tree's, from /proc/PID/stat
)

func (r dpRun) get(m metric) map[string]time.Duration {
	switch m {
	case mTree:
		return r.tree
	case mCgroup:
		return r.cpu
	case mTicks:
		return r.ticks
	}
	return r.guest
}

func (m metric) String() string {
	switch m {
	case mTree:
		return "virtiofsd's CPU time per operation (its process tree: the cgroup's but the shim's)"
	case mTicks:
		return "virtiofsd's CPU time per operation (/proc/PID/stat)"
	case mCgroup:
		return "the service's CPU time per operation (its cgroup: virtiofsd and, for the shim's units, the shim)"
	}
	return "guest-visible time per operation"
}

// cacheArg is how each flavor's virtiofsd is given a cache mode.
func cacheArg(rust bool, cache string) string {
	if rust {
		return "--cache=" + cache
	}
	if cache == "never" {
		cache = "none"
	}
	return "-o cache=" + cache
}

// dataPathCommand is the command that runs this section alone with the
// data-path flags this run was given.
func dataPathCommand() string {
	cmd := "go test -run '^TestReport$/^datapath$' -timeout 600m ./test/bench/ -args -report /tmp/datapath.md"
	flag.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "datapath-") && f.Name != "datapath-debug" {
			cmd += " -" + f.Name + " " + f.Value.String()
		}
	})
	return cmd
}

// dataPathParams are the workload's sizes from -datapath-size: full
// (guestload.Default), tiny, or FILES,TREE,MIB; and the shell workload's
// (guestload.DefaultShell, or TinyShell with tiny).
func dataPathParams() (guestload.Params, guestload.ShellParams, error) {
	p, sh := guestload.Default(), guestload.DefaultShell()
	switch *dataPathSize {
	case "full":
	case "tiny":
		t := guestload.Tiny()
		t.Pause, t.DropCaches = 200*time.Millisecond, true
		p = t
		sh = guestload.TinyShell()
		sh.Pause, sh.DropCaches = t.Pause, true
	default:
		var err error
		f := strings.Split(*dataPathSize, ",")
		if len(f) != 3 {
			return p, sh, fmt.Errorf("-datapath-size %q: want full, tiny or FILES,TREE,MIB", *dataPathSize)
		}
		for i, dst := range []*int{&p.Files, &p.TreeEntries, &p.StreamMiB} {
			if *dst, err = strconv.Atoi(f[i]); err != nil {
				return p, sh, fmt.Errorf("-datapath-size %q: %w", *dataPathSize, err)
			}
		}
	}
	return p, sh, nil
}

func reportDataPath(t *testing.T, s *section) {
	s.title = "Data path"
	ctx := context.Background()
	p, sh, err := dataPathParams()
	if err != nil {
		t.Fatal(err)
	}
	shell := ""
	if *dataPathShell {
		if shell, err = guestload.ShellScript("/mnt/auto", "auto", sh); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(benchDir(t), "guestload")
	if err = guestload.Build(ctx, bin); err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img, err := guest.Prepare(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	s.printf("What each file operation of a guest costs virtiofsd, whatever the guest's speed: a real guest (QEMU TCG,\n"+
		"one vCPU, test/testenv/guest) runs the workload of test/guestload (a static Go program in its initramfs) on two\n"+
		"shares of the variant measured, CACHE=auto and CACHE=never: create, stat, readdir and unlink of %d files, a\n"+
		"find-like walk (lstat of every entry) of a %d-entry tree, open + read 4 KiB + close of %d small files, all on\n"+
		"the auto share; then a sequential write (1 MiB writes, then fsync) and read of %d MiB on each share. Before each\n"+
		"group the guest drops its caches, so that the operations reach virtiofsd. The guest prints a line before and\n"+
		"after each group and then idles %v; on each line the host reads the service's CPU time, user and system\n"+
		"(usage_usec of the unit's cgroup's cpu.stat in the unified hierarchy, in µs: virtiofsd's whole process tree\n"+
		"with its ended threads, and the shim) and the shim's (the run time of its threads, /proc/PID/task/TID/schedstat,\n"+
		"in ns; Go's threads live as long as the shim). virtiofsd's own CPU time is the first less the second; it is\n"+
		"checked against utime+stime of /proc/PID/stat summed over the unit's processes but the shim (10 ms ticks, too\n"+
		"coarse for a group, close over the workload). CPU per operation is the difference over the group's operations\n"+
		"(files, entries, MiB); guest time per operation is the guest's own clock around the group. The goal is judged\n"+
		"on virtiofsd's own figure; the cgroup's adds what the shim costs beside it. The tree and small files are made\n"+
		"on the host before the boots.\n"+
		"The bare units get the shipped unit's LimitNOFILE=1000000 (with systemd's default soft limit of 1024 a bare\n"+
		"virtiofsd fails the walk with EMFILE about 1,000 entries in: one descriptor per inode the guest looked up),\n"+
		"but for one explaining variant of the Rust leg, which keeps systemd's default (1024:524288; the Rust virtiofsd\n"+
		"raises its soft limit to the hard one) as issue 27's bare unit did. On the Rust leg the shipped unit runs the\n"+
		"front (FRONT=auto, the default); a variant with FRONT=no measures the front's cost.\n"+
		"Each figure is the median of the runs; the variants' runs are interleaved, one guest boot each, the order\n"+
		"rotated each round. Flavors run in the box of their platform leg (C: Debian 12; Rust: Debian 13).\n",
		p.Files, p.TreeEntries, p.Files, p.StreamMiB, p.Pause)
	if shell != "" {
		shellIntro(s, sh)
	}

	for _, leg := range shimbox.Platforms() {
		if !strings.Contains(*dataPathLegs, leg.String()) {
			continue
		}
		ok := t.Run(leg.String(), func(t *testing.T) { dataPathLeg(t, s, leg, img, program, p, shell) })
		if !ok {
			s.printf("\n**The %s leg failed**; see the test output.\n", leg)
		}
	}
	s.printf("\nMeasured by `TestReport/datapath` (test/bench/datapath_test.go), these figures with:\n`%s`\n"+
		"(-datapath-size full, the default, is %d files, %d entries, %d MiB; -datapath-runs, -datapath-extra-runs,\n"+
		"-datapath-legs and -datapath-variants choose the rest.)\n", dataPathCommand(), guestload.Default().Files,
		guestload.Default().TreeEntries, guestload.Default().StreamMiB)
}

func dataPathLeg(t *testing.T, s *section, leg shimbox.Platform, img *guest.Image, program []byte, p guestload.Params, shell string) {
	ctx := context.Background()
	binary := leg.Virtiofsd()
	variants := []dpVariant{
		{name: "bare unit, no sandbox", key: "bare", bare: true},
		{name: "shipped unit", key: "ship"},
		{name: "shipped unit, STANDBY=yes", key: "sb", conf: "STANDBY=yes"},
	}
	if leg.Rust() {
		// The shipped unit runs the front by default where virtiofsd can
		// save its state (FRONT=auto): its cost is ship against this one.
		variants = append(variants, dpVariant{name: "shipped unit, FRONT=no", key: frontOff, conf: "FRONT=no"})
	}
	if *dataPathExtraRuns > 0 {
		variants = append(variants,
			dpVariant{name: "bare unit + the shipped sandbox lines", key: "sbx", bare: true, sandbox: true, extra: true},
			// With sbx, the four corners of shim x sandbox: what the shim
			// itself (virtiofsd its child, stderr in its pipe) costs.
			dpVariant{name: "shipped unit less its sandbox lines", key: "plain", plain: true, extra: true},
		)
		// The C virtiofsd of QEMU 7.2 with a thread pool is killed by its
		// own seccomp filter at the first request (glib's pool thread calls
		// sched_getaffinity, which its allow-list lacks; it exits 1), with or
		// without the sandbox: the thread pools are measured on the Rust leg
		// only, unless named in -datapath-variants (to see that failure again).
		pools := []dpVariant{
			{name: "shipped unit, THREAD_POOL_SIZE=4", key: "tp4", conf: "THREAD_POOL_SIZE=4", extra: true},
			{name: "shipped unit, THREAD_POOL_SIZE=16", key: "tp16", conf: "THREAD_POOL_SIZE=16", extra: true},
		}
		if *dataPathVariants != "" {
			pools = append(pools, dpVariant{name: "bare unit, --thread-pool-size=4", key: "btp4", bare: true, args: " --thread-pool-size=4", extra: true})
		}
		if leg.Rust() || *dataPathVariants != "" {
			variants = append(variants, pools...)
		}
		if leg.Rust() {
			// Issue 27's bare unit: systemd's default limit (1024:524288;
			// the Rust virtiofsd raises its soft limit to the hard one), where
			// the others have the shipped unit's 1000000. The bare unit
			// against it is the cost of LimitNOFILE=1000000 alone.
			variants = append(variants, dpVariant{name: "bare unit, systemd's default LimitNOFILE", key: bareDefaultNofile, bare: true, nofile: true, extra: true})
		}
	}
	if *dataPathVariants != "" {
		keep := map[string]bool{"bare": true}
		for _, k := range strings.Split(*dataPathVariants, ",") {
			keep[k] = true
		}
		var vs []dpVariant
		for _, v := range variants {
			if keep[v.key] {
				vs = append(vs, v)
			}
		}
		variants = vs
	}
	shipped, shippedText, err := shippedSandbox()
	if err != nil {
		t.Fatal(err)
	}
	// The box's root (b.Root) is not known before the boot: the bare units
	// share folders under a folder of the bench's.
	dir := benchDir(t)
	// The lines that confine virtiofsd: ExecStopPost= (resume) runs the
	// service instead.
	var confine []string
	for _, l := range shipped {
		if !strings.HasPrefix(l, "ExecStopPost=") {
			confine = append(confine, l)
		}
	}
	units := map[string]string{}
	for _, v := range variants {
		if v.plain {
			// A unit file named for the instance takes the template's
			// place for that instance alone.
			for _, c := range dpCaches {
				units["virtiofsd@"+v.key+"-"+c+".service"] = withoutLines(shippedText, confine)
			}
		}
		if !v.bare {
			continue
		}
		for _, c := range dpCaches {
			share := filepath.Join(dir, v.key+"-"+c)
			if err := os.Mkdir(share, 0o755); err != nil {
				t.Fatal(err)
			}
			src := "-o source=" + share
			if leg.Rust() {
				src = "--shared-dir=" + share
			}
			for k, u := range bareTemplate(v.key+"-"+c, "bare virtiofsd", binary+" --fd=3 "+src+" "+cacheArg(leg.Rust(), c)+v.args) {
				units[k] = u
			}
			// The shipped unit's descriptors (LimitNOFILE=1000000): with
			// systemd's default soft limit of 1024, a bare virtiofsd runs
			// out of them (EMFILE in the guest) about 1,000 entries into the
			// walk, one O_PATH descriptor per inode the guest looked up.
			if !v.nofile {
				units[v.key+"-"+c+"@.service.d/nofile.conf"] = "[Service]\nLimitNOFILE=1000000\n"
			}
			if v.sandbox {
				dropIn := "[Service]\n" + strings.Join(confine, "\n") + "\n"
				units[v.key+"-"+c+"@.service.d/sandbox.conf"] = dropIn
			}
		}
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-datapath", Platform: leg, ExtraUnits: units})
	var sockets []string
	for _, v := range variants {
		for _, c := range dpCaches {
			share := v.share(b, c)
			if v.bare {
				share = filepath.Join(dir, v.key+"-"+c)
				sockets = append(sockets, v.key+"-"+c+"@x.socket")
			} else {
				if _, err := b.AddInstance(v.key+"-"+c, "CACHE="+c, v.conf); err != nil {
					t.Fatal(err)
				}
				sockets = append(sockets, "virtiofsd@"+v.key+"-"+c+".socket")
			}
			if c == "auto" {
				if err := guestload.Prepare(share, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if out, err := b.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, sockets...)...); err != nil {
		t.Fatal(err, out)
	}
	check, _ := b.Run(ctx, shimbox.BinaryPath, "check", "ship-auto")
	qemu, err := leg.QEMU(ctx)
	if err != nil {
		t.Fatal(err)
	}

	runs := map[string][]dpRun{}
	cpu := newCPUSource(b)
	// A box's first guest boot ran cheaper than any after it (its creates
	// cost 0.5 s of CPU in two of three runs of 2026-12-03, against 1.0 to
	// 2.4 s later), and round 0 starts with the bare unit: one boot first,
	// not counted, so that no variant gets it.
	unix.Sync()
	if _, err := dataPathBoot(t, ctx, b, cpu, variants[0], img, program, qemu, p, shell); err != nil {
		t.Fatalf("%s, the warm-up boot: %v", leg, err)
	}
	rounds := max(*dataPathRuns, *dataPathExtraRuns)
	for round := 0; round < rounds; round++ {
		for k := range variants {
			v := variants[(round+k)%len(variants)]
			want := *dataPathRuns
			if v.extra {
				want = *dataPathExtraRuns
			}
			if len(runs[v.key]) >= want {
				continue
			}
			// The last boot's streams left up to twice StreamMiB of dirty
			// pages on the host: each boot starts with them written back,
			// so that none pays for another's writeback. (It did not narrow
			// the spread of the creates' CPU time from run to run.)
			unix.Sync()
			r, err := dataPathBoot(t, ctx, b, cpu, v, img, program, qemu, p, shell)
			if err != nil {
				for _, c := range dpCaches {
					out, _ := b.Systemctl(ctx, "status", "--no-pager", "-n", "30", v.unit(c))
					t.Log(out)
				}
				t.Fatalf("%s, %s, round %d: %v", leg, v.name, round, err)
			}
			runs[v.key] = append(runs[v.key], r)
			t.Logf("%s %s round %d: cgroup %v, virtiofsd %v, shell %+v", leg, v.key, round, r.cpu, r.tree, r.shell)
		}
	}
	srcs := map[string]bool{}
	for _, src := range cpu.used {
		srcs[src] = true
	}
	dataPathTables(s, leg, variants, runs, check)
	if shell != "" {
		shellTables(s, leg, variants, runs)
	}
	if leg.Rust() {
		frontTables(s, variants, runs, shell != "")
	}
	if srcs["schedstat"] {
		s.printf("\nThe CPU figures of this leg come from /proc/PID/task/TID/schedstat (ns, summed over the live threads of the\n" +
			"unit's processes; a thread that ended during a group is not counted): its box has no unified cgroup hierarchy.\n")
	}
}

// dataPathBoot boots one guest on the variant's two shares, runs the
// workload and reads the services' CPU time at each of its lines.
func dataPathBoot(t *testing.T, ctx context.Context, b *shimbox.Box, cpu *cpuSource, v dpVariant, img *guest.Image, program []byte, qemu string, p guestload.Params, shell string) (dpRun, error) {
	r := dpRun{guest: map[string]time.Duration{}, cpu: map[string]time.Duration{}, tree: map[string]time.Duration{},
		ticks: map[string]time.Duration{}, n: map[string]int{}, unit: map[string]string{}}
	var mu sync.Mutex
	var hookErr error
	begin := map[string]cpuReading{}
	hook := &lineHook{f: func(line string) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `{"event":`) {
			return
		}
		var rec guestload.Record
		if json.Unmarshal([]byte(line), &rec) != nil {
			return
		}
		used, err := cpu.usage(ctx, v.unit(rec.Share))
		if *dataPathDebug {
			t.Logf("%s %s %s/%s: %v %v", time.Now().Format("15:04:05.000"), v.key, rec.Share, rec.Group, used, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			hookErr = err
			return
		}
		key := rec.Share + "/" + rec.Group
		switch rec.Event {
		case "begin":
			begin[key] = used
			if rec.Group == guestload.ShellGroup {
				r.shell.nofile = cpu.openFileLimits(v.unit(rec.Share))
			}
		case "result":
			r.cpu[key] = used.cgroup - begin[key].cgroup
			r.tree[key] = used.virtiofsd() - begin[key].virtiofsd()
			r.ticks[key] = used.ticks - begin[key].ticks
			r.unit[key] = rec.Unit
		}
	}}
	args := fmt.Sprintf("-files %d -tree %d -stream-mib %d -pause %v", p.Files, p.TreeEntries, p.StreamMiB, p.Pause)
	res, err := guest.Run(ctx, img, guest.Spec{
		QEMU:    qemu,
		Shares:  []guest.Share{{Tag: "auto", Socket: v.socket(b, "auto")}, {Tag: "never", Socket: v.socket(b, "never")}},
		Files:   map[string][]byte{"bin/guestload": program},
		Console: hook,
		Timeout: 20 * time.Minute,
		Script: `set -e
mount -t virtiofs auto /mnt/auto
mount -t virtiofs never /mnt/never
` + shell + `guestload -dir /mnt/auto -share auto ` + args + `
guestload -dir /mnt/never -share never -groups stream ` + args + `
`,
	})
	if err != nil {
		return r, err
	}
	if res.ExitStatus != 0 {
		return r, fmt.Errorf("the workload failed (exit status %d):\n%s", res.ExitStatus, lastLines(res.Serial, 40))
	}
	mu.Lock()
	defer mu.Unlock()
	if hookErr != nil {
		return r, hookErr
	}
	for key, rec := range guestload.Results(guestload.ParseRecords(res.Serial)) {
		if !rec.OK {
			return r, fmt.Errorf("%s: %s", key, rec.Error)
		}
		r.guest[key] = rec.Duration()
		r.n[key] = rec.N
		if rec.Group == guestload.ShellGroup {
			r.takeShell(key, rec)
		}
	}
	// The sessions end with the guest: wait for them, so that the next
	// boot of this variant starts from the same state.
	for _, c := range dpCaches {
		if v.conf == "STANDBY=yes" {
			continue
		}
		if err := waitInactive(ctx, b, v.unit(c), 30*time.Second); err != nil {
			return r, err
		}
	}
	return r, nil
}

// cpuSource reads a unit's CPU time from the host: its cgroup's cpu.stat
// (usage_usec) in the unified hierarchy, which systemd keeps for every unit
// in hybrid mode and which counts exited threads and processes too; where
// there is none, the run time of the unit's live threads (schedstat). And
// the shim's (its threads' schedstat), so that virtiofsd's own is the
// rest; and, to check that, /proc/PID/stat of each of the unit's processes
// but the shim.
type cpuSource struct {
	b    *shimbox.Box
	mu   sync.Mutex
	cg   map[string]string // unit -> cgroup path relative to the box's root
	used map[string]string // unit -> "cpu.stat" or "schedstat"
}

// cpuReading is one reading of a unit's CPU time.
type cpuReading struct {
	cgroup time.Duration // the unit's cgroup: virtiofsd and the shim (µs)
	shim   time.Duration // the shim's threads (ns; Go's threads live as long as the shim)
	ticks  time.Duration // every process of the unit but the shim, from /proc/PID/stat (10 ms ticks)
}

// virtiofsd is virtiofsd's own CPU time, its whole process tree with the
// threads that ended: the cgroup's but the shim's.
func (r cpuReading) virtiofsd() time.Duration { return r.cgroup - r.shim }

// shimComm is the shim's name in /proc/PID/stat.
const shimComm = "virtiofsd-shim"

func newCPUSource(b *shimbox.Box) *cpuSource {
	return &cpuSource{b: b, cg: map[string]string{}, used: map[string]string{}}
}

// boxRoot is the box systemd's own cgroup in the unified hierarchy
// ("/sdbox/ID"), from its pid 1's "0::" line (minus init.scope).
func (c *cpuSource) boxRoot() string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.b.PID()))
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return strings.TrimSuffix(p, "/init.scope")
		}
	}
	return ""
}

func (c *cpuSource) usage(ctx context.Context, unit string) (cpuReading, error) {
	var r cpuReading
	c.mu.Lock()
	cg, ok := c.cg[unit]
	c.mu.Unlock()
	if !ok {
		cg = show(ctx, c.b, unit, "ControlGroup")
		if cg == "" {
			return r, fmt.Errorf("%s: no ControlGroup", unit)
		}
		c.mu.Lock()
		c.cg[unit] = cg
		c.mu.Unlock()
	}
	pids := c.processes(cg)
	if len(pids) == 0 {
		return r, fmt.Errorf("%s: no process in %s", unit, cg)
	}
	for _, pid := range pids {
		comm, d, err := processCPU(pid)
		switch {
		case err != nil:
		case comm == shimComm:
			r.shim += threadsRunTime(pid)
		default:
			r.ticks += d
		}
	}
	if d, ok := c.cgroupUsage(cg); ok {
		c.note(unit, "cpu.stat")
		r.cgroup = d
		return r, nil
	}
	// No unified hierarchy: the run time (ns, /proc/PID/task/TID/schedstat)
	// of every live thread of the unit's processes.
	for _, pid := range pids {
		r.cgroup += threadsRunTime(pid)
	}
	c.note(unit, "schedstat")
	return r, nil
}

// threadsRunTime is the time a process's live threads have run, in ns
// (/proc/PID/task/TID/schedstat); a thread that ended is not counted.
func threadsRunTime(pid int) time.Duration {
	var sum time.Duration
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, task := range tasks {
		st, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(st)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(n)
		}
	}
	return sum
}

// unifiedPath is a unit's cgroup in the host's unified hierarchy: systemd
// names it from the hierarchy's root (252) or from its own (257 in a
// cgroup namespace).
func (c *cpuSource) unifiedPath(cg string) string {
	if root := c.boxRoot(); !strings.HasPrefix(cg, root+"/") {
		cg = root + cg
	}
	return filepath.Join("/sys/fs/cgroup/unified", cg)
}

// cgroupUsage is usage_usec of the unit's cgroup's cpu.stat.
func (c *cpuSource) cgroupUsage(cg string) (time.Duration, bool) {
	return cgroupCPU(c.unifiedPath(cg))
}

// cgroupCPU is usage_usec of cpu.stat in dir, a cgroup of the unified
// hierarchy: the CPU time of every process and thread that ran in it.
func cgroupCPU(dir string) (time.Duration, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(n) * time.Microsecond, err == nil
		}
	}
	return 0, false
}

// processes are the host's PIDs of the unit's processes: its cgroup's
// cgroup.procs (read from the host, in the host's PID namespace), or the
// box's processes whose cgroup is the unit's.
func (c *cpuSource) processes(cg string) []int {
	var pids []int
	if b, err := os.ReadFile(filepath.Join(c.unifiedPath(cg), "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	for _, pid := range c.b.Processes() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err == nil && strings.Contains(string(b), cg+"\n") {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (c *cpuSource) note(unit, src string) {
	c.mu.Lock()
	c.used[unit] = src
	c.mu.Unlock()
}

// lineHook calls f with each complete line written to it.
type lineHook struct {
	buf []byte
	f   func(string)
}

func (h *lineHook) Write(p []byte) (int, error) {
	h.buf = append(h.buf, p...)
	for {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(h.buf[:i])
		h.buf = h.buf[i+1:]
		h.f(line)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// perOp is the median over runs of a figure divided by the group's
// operations.
func perOp(runs []dpRun, key string, m metric) time.Duration {
	var x Sample
	for _, r := range runs {
		d := r.get(m)[key]
		if r.n[key] > 0 {
			x = append(x, d/time.Duration(r.n[key]))
		}
	}
	if len(x) == 0 {
		return 0
	}
	return x.Median()
}

func fmtOp(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= 10*time.Microsecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2f µs", float64(d)/1e3)
	}
}

func dataPathTables(s *section, leg shimbox.Platform, variants []dpVariant, runs map[string][]dpRun, check string) {
	keys := dpKeys()
	unitOf := func(key string) string {
		for _, r := range runs["bare"] {
			if u := r.unit[key]; u != "" {
				return u
			}
		}
		return "op"
	}
	flavor := "C"
	if leg.Rust() {
		flavor = "Rust"
	}
	s.printf("\n### %s virtiofsd, %s leg (`%s`)\n\n", flavor, leg.Distribution(), leg.Virtiofsd())
	s.printf("The shim's command line for the auto share (`virtiofsd-shim check`, in the box):\n\n```\n%s\n```\n", strings.TrimSpace(check))
	s.printf("Runs: ")
	for i, v := range variants {
		if i > 0 {
			s.printf(", ")
		}
		s.printf("%s %d", v.key, len(runs[v.key]))
	}
	s.printf(".\n")
	worst := map[string]float64{}
	for _, m := range []metric{mTree, mCgroup, mGuest} {
		s.printf("\n%s, median of the runs; ratio to the bare unit in brackets:\n\n| share/group | per | ", m)
		for _, v := range variants {
			s.printf("%s | ", v.name)
		}
		s.printf("\n|---|---|%s\n", strings.Repeat("---|", len(variants)))
		for _, key := range keys {
			bare := perOp(runs["bare"], key, m)
			s.printf("| %s | %s | %s |", key, unitOf(key), fmtOp(bare))
			for _, v := range variants[1:] {
				d := perOp(runs[v.key], key, m)
				ratio := float64(d) / float64(bare)
				s.printf(" %s (%.2f) |", fmtOp(d), ratio)
				if v.key == "ship" || v.key == "sb" {
					k := fmt.Sprintf("%d/%s", m, v.key)
					worst[k] = math.Max(worst[k], ratio)
				}
			}
			s.printf("\n")
		}
		s.printf("| geometric mean of the ratios | | 1.00 |")
		for _, v := range variants[1:] {
			s.printf(" %.2f |", geoMeanRatio(runs, "bare", v.key, keys, m))
		}
		s.printf("\n")
	}
	pairedTable(s, variants, runs)
	shimTable(s, variants, runs)
	for _, v := range []string{"ship", "sb"} {
		if len(runs[v]) == 0 {
			continue // not measured (-datapath-variants)
		}
		c, cg, g := geoMeanRatio(runs, "bare", v, keys, mTree), geoMeanRatio(runs, "bare", v, keys, mCgroup), geoMeanRatio(runs, "bare", v, keys, mGuest)
		s.printf("\nGoal, %s (%s): virtiofsd's CPU per operation <= 1.03 x bare: geometric mean %.2f, worst group %.2f (%s); "+
			"guest time <= 1.03 x bare: %.2f, worst %.2f (%s). With the shim (the cgroup): %.2f, worst %.2f.\n",
			variantName(variants, v), flavor, c, worst[fmt.Sprintf("%d/%s", mTree, v)], goal(c <= 1.03),
			g, worst[fmt.Sprintf("%d/%s", mGuest, v)], goal(g <= 1.03), cg, worst[fmt.Sprintf("%d/%s", mCgroup, v)])
	}
}

// dpKeys are the keys (share/group) of test/guestload's groups in a dpRun:
// every group on the auto share, the streaming ones on the never share too.
func dpKeys() []string {
	var keys []string
	for _, g := range guestload.Groups {
		keys = append(keys, "auto/"+g)
	}
	for _, g := range guestload.StreamGroups {
		keys = append(keys, "never/"+g)
	}
	return keys
}

// withoutLines is the unit text less the given lines (and the comments).
func withoutLines(text string, lines []string) string {
	drop := map[string]bool{}
	for _, l := range lines {
		drop[l] = true
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if t := strings.TrimSpace(l); !drop[t] && !strings.HasPrefix(t, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func variantName(vs []dpVariant, key string) string {
	for _, v := range vs {
		if v.key == key {
			return v.name
		}
	}
	return key
}

// geoMeanRatio is the geometric mean over the groups of the variant's
// median per operation against the base variant's (the bare unit's).
func geoMeanRatio(runs map[string][]dpRun, base, key string, keys []string, m metric) float64 {
	sum, n := 0.0, 0
	for _, k := range keys {
		bare, d := perOp(runs[base], k, m), perOp(runs[key], k, m)
		if bare > 0 && d > 0 {
			sum += math.Log(float64(d) / float64(bare))
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return math.Exp(sum / float64(n))
}

// sumGroups is a run's figure summed over the metadata groups or over the
// streaming groups.
func sumGroups(r dpRun, m metric, stream bool) time.Duration {
	var d time.Duration
	for k, v := range r.get(m) {
		if strings.Contains(k, "/stream-") == stream {
			d += v
		}
	}
	return d
}

// pairedTable prints, for each variant, virtiofsd's CPU time and the
// service's summed over the metadata groups and over the streaming groups,
// each run against the bare unit's run of the same round (minutes apart,
// so slow swings of the machine's load cancel): the median ratio and its
// range.
func pairedTable(s *section, variants []dpVariant, runs map[string][]dpRun) {
	s.printf("\nPaired by round: CPU time summed over the groups, each run of a variant against the bare unit's run of\n" +
		"the same round; median ratio (lowest to highest):\n\n" +
		"| variant | virtiofsd, metadata groups | virtiofsd, streaming groups | cgroup, metadata groups | cgroup, streaming groups |\n" +
		"|---|---|---|---|---|\n")
	for _, v := range variants[1:] {
		s.printf("| %s |", v.name)
		for _, m := range []metric{mTree, mCgroup} {
			for _, stream := range []bool{false, true} {
				var x []float64
				for i, r := range runs[v.key] {
					if i < len(runs["bare"]) && sumGroups(runs["bare"][i], m, stream) > 0 {
						x = append(x, float64(sumGroups(r, m, stream))/float64(sumGroups(runs["bare"][i], m, stream)))
					}
				}
				if len(x) == 0 {
					s.printf(" |")
					continue
				}
				sort.Float64s(x)
				s.printf(" %.2f (%.2f to %.2f) |", medianOf(x), x[0], x[len(x)-1])
			}
		}
		s.printf("\n")
	}
}

// shimTable prints the whole workload's CPU time (all groups), median of
// the runs: the cgroup's, the shim's and virtiofsd's, and virtiofsd's
// again from /proc/PID/stat, which checks the subtraction.
func shimTable(s *section, variants []dpVariant, runs map[string][]dpRun) {
	s.printf("\nThe whole workload's CPU time (all groups), median of the runs: the cgroup's, the shim's (the cgroup's\n" +
		"less virtiofsd's), virtiofsd's, and virtiofsd's again from /proc/PID/stat (10 ms ticks per reading):\n\n" +
		"| variant | cgroup | shim | virtiofsd | virtiofsd, /proc/PID/stat |\n|---|---|---|---|---|\n")
	all := func(r dpRun, m metric) time.Duration { return sumGroups(r, m, false) + sumGroups(r, m, true) }
	for _, v := range variants {
		var cg, shim, tree, ticks Sample
		for _, r := range runs[v.key] {
			cg, shim = append(cg, all(r, mCgroup)), append(shim, all(r, mCgroup)-all(r, mTree))
			tree, ticks = append(tree, all(r, mTree)), append(ticks, all(r, mTicks))
		}
		if len(cg) == 0 {
			continue
		}
		s.printf("| %s | %s | %s | %s | %s |\n", v.name, fmtMs(cg.Median()), fmtMs(shim.Median()), fmtMs(tree.Median()), fmtMs(ticks.Median()))
	}
}

func fmtMs(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
