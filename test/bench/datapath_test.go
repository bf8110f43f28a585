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
	args    string // more arguments of a bare unit's virtiofsd
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

// dpRun is what one guest boot measured: per share/group, the guest's time
// and the service's CPU time, and the number of operations.
type dpRun struct {
	guest, cpu map[string]time.Duration
	n          map[string]int
	unit       map[string]string
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
// (guestload.Default), tiny, or FILES,TREE,MIB.
func dataPathParams() (guestload.Params, error) {
	p := guestload.Default()
	switch *dataPathSize {
	case "full":
	case "tiny":
		t := guestload.Tiny()
		t.Pause, t.DropCaches = 200*time.Millisecond, true
		p = t
	default:
		var err error
		f := strings.Split(*dataPathSize, ",")
		if len(f) != 3 {
			return p, fmt.Errorf("-datapath-size %q: want full, tiny or FILES,TREE,MIB", *dataPathSize)
		}
		for i, dst := range []*int{&p.Files, &p.TreeEntries, &p.StreamMiB} {
			if *dst, err = strconv.Atoi(f[i]); err != nil {
				return p, fmt.Errorf("-datapath-size %q: %w", *dataPathSize, err)
			}
		}
	}
	return p, nil
}

func reportDataPath(t *testing.T, s *section) {
	s.title = "Data path"
	ctx := context.Background()
	p, err := dataPathParams()
	if err != nil {
		t.Fatal(err)
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
		"after each group and then idles %v; on each line the host reads the service's CPU time (usage_usec of the\n"+
		"unit's cgroup's cpu.stat in the unified hierarchy: the shim and virtiofsd, every process and thread). CPU per\n"+
		"operation is that difference over the group's operations (files, entries, MiB); guest time per operation is\n"+
		"the guest's own clock around the group. The tree and small files are made on the host before the boots.\n"+
		"The bare units get the shipped unit's LimitNOFILE=1000000 (with systemd's default soft limit of 1024 a bare\n"+
		"virtiofsd fails the walk with EMFILE about 1,000 entries in: one descriptor per inode the guest looked up).\n"+
		"Each figure is the median of the runs; the variants' runs are interleaved, one guest boot each, the order\n"+
		"rotated each round. Flavors run in the box of their platform leg (C: Debian 12; Rust: Debian 13).\n",
		p.Files, p.TreeEntries, p.Files, p.StreamMiB, p.Pause)

	for _, leg := range shimbox.Platforms() {
		if !strings.Contains(*dataPathLegs, leg.String()) {
			continue
		}
		ok := t.Run(leg.String(), func(t *testing.T) { dataPathLeg(t, s, leg, img, program, p) })
		if !ok {
			s.printf("\n**The %s leg failed**; see the test output.\n", leg)
		}
	}
	s.printf("\nMeasured by `TestReport/datapath` (test/bench/datapath_test.go), these figures with:\n`%s`\n"+
		"(-datapath-size full, the default, is %d files, %d entries, %d MiB; -datapath-runs, -datapath-extra-runs,\n"+
		"-datapath-legs and -datapath-variants choose the rest.)\n", dataPathCommand(), guestload.Default().Files,
		guestload.Default().TreeEntries, guestload.Default().StreamMiB)
}

func dataPathLeg(t *testing.T, s *section, leg shimbox.Platform, img *guest.Image, program []byte, p guestload.Params) {
	ctx := context.Background()
	binary := leg.Virtiofsd()
	variants := []dpVariant{
		{name: "bare unit, no sandbox", key: "bare", bare: true},
		{name: "shipped unit", key: "ship"},
		{name: "shipped unit, STANDBY=yes", key: "sb", conf: "STANDBY=yes"},
	}
	if *dataPathExtraRuns > 0 {
		variants = append(variants,
			dpVariant{name: "bare unit + the shipped sandbox lines", key: "sbx", bare: true, sandbox: true, extra: true},
		)
		// The C virtiofsd of QEMU 7.2 with a thread pool exited with status
		// 1 under the guest's I/O, with or without the sandbox (found here:
		// a bare unit with --thread-pool-size=4 as well as THREAD_POOL_SIZE=4):
		// the thread pools are measured on the Rust leg only.
		if leg.Rust() {
			variants = append(variants,
				dpVariant{name: "shipped unit, THREAD_POOL_SIZE=4", key: "tp4", conf: "THREAD_POOL_SIZE=4", extra: true},
				dpVariant{name: "shipped unit, THREAD_POOL_SIZE=16", key: "tp16", conf: "THREAD_POOL_SIZE=16", extra: true})
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
	shipped, _, err := shippedSandbox()
	if err != nil {
		t.Fatal(err)
	}
	// The box's root (b.Root) is not known before the boot: the bare units
	// share folders under a folder of the bench's.
	dir := benchDir(t)
	units := map[string]string{}
	for _, v := range variants {
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
			units[v.key+"-"+c+"@.service.d/nofile.conf"] = "[Service]\nLimitNOFILE=1000000\n"
			if v.sandbox {
				dropIn := "[Service]\n"
				for _, l := range shipped {
					if !strings.HasPrefix(l, "ExecStopPost=") {
						dropIn += l + "\n"
					}
				}
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
			r, err := dataPathBoot(t, ctx, b, cpu, v, img, program, qemu, p)
			if err != nil {
				for _, c := range dpCaches {
					out, _ := b.Systemctl(ctx, "status", "--no-pager", "-n", "30", v.unit(c))
					t.Log(out)
				}
				t.Fatalf("%s, %s, round %d: %v", leg, v.name, round, err)
			}
			runs[v.key] = append(runs[v.key], r)
			t.Logf("%s %s round %d: cpu %v", leg, v.key, round, r.cpu)
		}
	}
	srcs := map[string]bool{}
	for _, src := range cpu.used {
		srcs[src] = true
	}
	dataPathTables(s, leg, variants, runs, check)
	if srcs["schedstat"] {
		s.printf("\nThe CPU figures of this leg come from /proc/PID/task/TID/schedstat (ns, summed over the live threads of the\n" +
			"unit's processes; a thread that ended during a group is not counted): its box has no unified cgroup hierarchy.\n")
	}
}

// dataPathBoot boots one guest on the variant's two shares, runs the
// workload and reads the services' CPU time at each of its lines.
func dataPathBoot(t *testing.T, ctx context.Context, b *shimbox.Box, cpu *cpuSource, v dpVariant, img *guest.Image, program []byte, qemu string, p guestload.Params) (dpRun, error) {
	r := dpRun{guest: map[string]time.Duration{}, cpu: map[string]time.Duration{}, n: map[string]int{}, unit: map[string]string{}}
	var mu sync.Mutex
	var hookErr error
	begin := map[string]time.Duration{}
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
		case "result":
			r.cpu[key] = used - begin[key]
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
guestload -dir /mnt/auto -share auto ` + args + `
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
// there is none, the run time of the unit's live threads (schedstat).
type cpuSource struct {
	b    *shimbox.Box
	mu   sync.Mutex
	cg   map[string]string // unit -> cgroup path relative to the box's root
	used map[string]string // unit -> "cpu.stat" or "/proc"
}

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

func (c *cpuSource) usage(ctx context.Context, unit string) (time.Duration, error) {
	c.mu.Lock()
	cg, ok := c.cg[unit]
	c.mu.Unlock()
	if !ok {
		cg = show(ctx, c.b, unit, "ControlGroup")
		if cg == "" {
			return 0, fmt.Errorf("%s: no ControlGroup", unit)
		}
		c.mu.Lock()
		c.cg[unit] = cg
		c.mu.Unlock()
	}
	// systemd names the cgroup from the hierarchy's root (252) or from
	// its own (257 in a cgroup namespace).
	path := cg
	if root := c.boxRoot(); !strings.HasPrefix(cg, root+"/") {
		path = root + cg
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/unified", path, "cpu.stat")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: cpu.stat: %w", unit, err)
				}
				c.note(unit, "cpu.stat")
				return time.Duration(n) * time.Microsecond, nil
			}
		}
	}
	// No unified hierarchy: the run time (ns, /proc/PID/task/TID/schedstat)
	// of every live thread of the processes whose cgroup is the unit's.
	var sum int64
	found := false
	for _, pid := range c.b.Processes() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil || !strings.Contains(string(b), cg+"\n") {
			continue
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, task := range tasks {
			st, err := os.ReadFile(task)
			if err != nil {
				continue // the thread ended
			}
			f := strings.Fields(string(st))
			if len(f) == 0 {
				continue
			}
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s: no process in %s", unit, cg)
	}
	c.note(unit, "schedstat")
	return time.Duration(sum), nil
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
func perOp(runs []dpRun, key string, cpu bool) time.Duration {
	var x Sample
	for _, r := range runs {
		d := r.guest[key]
		if cpu {
			d = r.cpu[key]
		}
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
	var keys []string
	for _, g := range guestload.Groups {
		keys = append(keys, "auto/"+g)
	}
	for _, g := range guestload.StreamGroups {
		keys = append(keys, "never/"+g)
	}
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
	for _, cpu := range []bool{true, false} {
		what := "virtiofsd's CPU time per operation (the service's cgroup)"
		if !cpu {
			what = "guest-visible time per operation"
		}
		s.printf("\n%s, median of the runs; ratio to the bare unit in brackets:\n\n| share/group | per | ", what)
		for _, v := range variants {
			s.printf("%s | ", v.name)
		}
		s.printf("\n|---|---|%s\n", strings.Repeat("---|", len(variants)))
		for _, key := range keys {
			bare := perOp(runs["bare"], key, cpu)
			s.printf("| %s | %s | %s |", key, unitOf(key), fmtOp(bare))
			for _, v := range variants[1:] {
				d := perOp(runs[v.key], key, cpu)
				ratio := float64(d) / float64(bare)
				s.printf(" %s (%.2f) |", fmtOp(d), ratio)
				if v.key == "ship" || v.key == "sb" {
					k := fmt.Sprintf("%v/%s", cpu, v.key)
					worst[k] = math.Max(worst[k], ratio)
				}
			}
			s.printf("\n")
		}
		s.printf("| geometric mean of the ratios | | 1.00 |")
		for _, v := range variants[1:] {
			s.printf(" %.2f |", geoMeanRatio(runs, v.key, keys, cpu))
		}
		s.printf("\n")
	}
	pairedTable(s, variants, runs)
	for _, v := range []string{"ship", "sb"} {
		c, g := geoMeanRatio(runs, v, keys, true), geoMeanRatio(runs, v, keys, false)
		s.printf("\nGoal, %s (%s): CPU per operation <= 1.03 x bare: geometric mean %.2f, worst group %.2f (%s); guest time <= 1.03 x bare: %.2f, worst %.2f (%s).\n",
			variantName(variants, v), flavor, c, worst["true/"+v], goal(c <= 1.03), g, worst["false/"+v], goal(g <= 1.03))
	}
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
// median per operation against the bare unit's.
func geoMeanRatio(runs map[string][]dpRun, key string, keys []string, cpu bool) float64 {
	sum, n := 0.0, 0
	for _, k := range keys {
		bare, d := perOp(runs["bare"], k, cpu), perOp(runs[key], k, cpu)
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

// pairedTable prints, for each variant, the service's CPU time summed over
// the metadata groups and over the streaming groups, each run against the
// bare unit's run of the same round (minutes apart, so slow swings of the
// machine's load cancel): the median ratio and its range.
func pairedTable(s *section, variants []dpVariant, runs map[string][]dpRun) {
	s.printf("\nPaired by round: the service's CPU time summed over the groups, each run of a variant against the bare\n" +
		"unit's run of the same round; median ratio (lowest to highest):\n\n| variant | metadata groups | streaming groups |\n|---|---|---|\n")
	sum := func(r dpRun, stream bool) time.Duration {
		var d time.Duration
		for k, v := range r.cpu {
			if strings.Contains(k, "/stream-") == stream {
				d += v
			}
		}
		return d
	}
	for _, v := range variants[1:] {
		s.printf("| %s |", v.name)
		for _, stream := range []bool{false, true} {
			var x []float64
			for i, r := range runs[v.key] {
				if i < len(runs["bare"]) && sum(runs["bare"][i], stream) > 0 {
					x = append(x, float64(sum(r, stream))/float64(sum(runs["bare"][i], stream)))
				}
			}
			if len(x) == 0 {
				s.printf(" |")
				continue
			}
			sort.Float64s(x)
			med := x[len(x)/2]
			if len(x)%2 == 0 {
				med = (x[len(x)/2-1] + x[len(x)/2]) / 2
			}
			s.printf(" %.2f (%.2f to %.2f) |", med, x[0], x[len(x)-1])
		}
		s.printf("\n")
	}
}
