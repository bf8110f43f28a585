package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

func init() { register(50, "flood", reportFlood) }

// floodLines is how many lines the log flood writes.
const floodLines = 200000

// floodReps is how many times each flood variant runs.
const floodReps = 5

// floodPython is the slow writer: an interpreter spending microseconds per
// line, one os.write (write(2)) per line, in the Rust virtiofsd's format.
const floodPython = `#!/usr/bin/python3
import os, time
n = int(os.environ["BENCH_LINES"])
prefix = b"` + rustPrefix + `"
os.write(2, prefix + b"Waiting for vhost-user socket connection...\n")
start = time.monotonic_ns()
for i in range(n):
    os.write(2, prefix + b"flood line %d\n" % i)
elapsed = time.monotonic_ns() - start
with open(os.environ["BENCH_RESULT"], "w") as f:
    f.write(str(elapsed))
`

// helperCopy copies this test binary where a box can run it.
func helperCopy(t *testing.T, dir string) string {
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "benchhelper")
	if err := os.WriteFile(p, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func readNS(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n), err
}

// journalCount counts the entries of a unit's journal that carry flood lines.
func journalCount(ctx context.Context, b *shimbox.Box, unit string) int {
	out, _ := b.Run(ctx, "sh", "-c", "journalctl --no-pager -o cat -u "+unit+" | grep -c 'flood line' || true")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// settledCount waits for journald to catch up: the count stops growing.
func settledCount(ctx context.Context, b *shimbox.Box, unit string) int {
	last := -1
	for i := 0; i < 60; i++ {
		n := journalCount(ctx, b, unit)
		if n == last {
			return n
		}
		last = n
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

// shimCounts reads the shim's lines_forwarded/lines_dropped (its exit
// warning) and the sum of VIRTIOFSD_DROPPED warnings, as journald kept them.
func shimCounts(ctx context.Context, b *shimbox.Box, unit string) (forwarded, dropped, suppressed string, warned, said int) {
	forwarded, dropped, suppressed = "not in the journal", "not in the journal", "not in the journal"
	entries, _ := b.Journal(ctx, "-u", unit)
	for _, e := range entries {
		if v, ok := e["SHIM_LINES_FORWARDED"]; ok {
			forwarded = v
		}
		if v, ok := e["SHIM_LINES_DROPPED"]; ok {
			dropped = v
		}
		if v, ok := e["SHIM_LINES_SUPPRESSED"]; ok {
			suppressed = v
		}
		if v, ok := e["VIRTIOFSD_DROPPED"]; ok {
			n, _ := strconv.Atoi(v)
			warned += n
		}
		if v, ok := e["VIRTIOFSD_SUPPRESSED"]; ok {
			n, _ := strconv.Atoi(v)
			said += n
		}
	}
	return forwarded, dropped, suppressed, warned, said
}

// floodWriter is one kind of flooding child.
type floodWriter struct {
	key, name string
	path      string // the program
	helper    string // BENCH_HELPER for it ("" for a script)
}

func (w floodWriter) env(result string) []string {
	env := []string{envLines + "=" + strconv.Itoa(floodLines), envResult + "=" + result, envFormat + "=rust"}
	if w.helper != "" {
		env = append(env, envHelper+"="+w.helper)
	}
	return env
}

func reportFlood(t *testing.T, s *section) {
	s.title = "Log flood"
	ctx := context.Background()
	dir := benchDir(t)
	helper := helperCopy(t, dir)
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	py := filepath.Join(dir, "flood.py")
	if err := os.WriteFile(py, []byte(floodPython), 0o755); err != nil {
		t.Fatal(err)
	}
	writers := []floodWriter{
		{key: "go", name: "compiled (Go, this test binary's helper `flood`)", path: helper, helper: "flood"},
		{key: "py", name: "interpreted (python3, os.write per line)", path: py},
	}
	shipped, _, err := shippedSandbox()
	if err != nil {
		t.Fatal(err)
	}
	// The floor and the bound run in a unit of their own with the shipped
	// unit's sandbox lines and Go settings: the same conditions as the shim.
	units := map[string]string{
		"flooddrain@.service": "[Unit]\nDescription=log flood drained as cat(1) does (benchmark floor)\n\n[Service]\n" +
			"Type=oneshot\nTimeoutStartSec=infinity\nEnvironment=GOMAXPROCS=1\nExecStart=" + helper + "\n" + strings.Join(shipped, "\n") + "\n",
		"floodbare@.service": "[Unit]\nDescription=log flood straight to journald (benchmark baseline)\n\n[Service]\n" +
			"Type=oneshot\nTimeoutStartSec=infinity\n",
	}
	res := func(variant string, w floodWriter, r int) string {
		return fmt.Sprintf("%s/%s-%s-%d.ns", dir, variant, w.key, r)
	}
	for _, w := range writers {
		for r := 0; r < floodReps; r++ {
			for _, mode := range []string{"null", "pipe"} {
				units[fmt.Sprintf("flooddrain@%s-%s-%d.service.d/bench.conf", mode, w.key, r)] = "[Service]\nEnvironment=" +
					strings.Join(append(w.env(res(mode, w, r)), envHelper+"=drain", envDrain+"="+mode, envChild+"="+w.path, envChildH+"="+w.helper), " ") + "\n"
			}
			units[fmt.Sprintf("floodbare@%s-%d.service.d/bench.conf", w.key, r)] = "[Service]\nEnvironment=" +
				strings.Join(w.env(res("bare", w, r)), " ") + "\nExecStart=" + w.path + "\n"
			units[fmt.Sprintf("virtiofsd@flood%s%d.service.d/bench.conf", w.key, r)] = "[Service]\nEnvironment=" +
				strings.Join(w.env(res("shim", w, r)), " ") + "\n"
		}
	}
	// One more run, profiled: an unstripped build of the shim (symbols for
	// perf), the slow writer.
	syms := filepath.Join(dir, "virtiofsd-shim-syms")
	prof := writers[1]
	units["virtiofsd@floodprof.service.d/bench.conf"] = "[Service]\nEnvironment=" + strings.Join(prof.env(filepath.Join(dir, "prof.ns")), " ") +
		"\nExecStart=\nExecStart=" + syms + " run --instance=%i\n"
	b := shimbox.New(t, shimbox.Options{Name: "bench-flood", ExtraUnits: units})
	if err := b.Configure("floodprof", "SHARED_DIR="+share+"\nVIRTIOFSD="+prof.path+"\nFLAVOR=rust\n"); err != nil {
		t.Fatal(err)
	}
	for _, w := range writers {
		for r := 0; r < floodReps; r++ {
			if err := b.Configure(fmt.Sprintf("flood%s%d", w.key, r), "SHARED_DIR="+share+"\nVIRTIOFSD="+w.path+"\nFLAVOR=rust\n"); err != nil {
				t.Fatal(err)
			}
		}
	}

	type row struct {
		name         string
		s            Sample
		got          []int
		fwd, dropped []string
		suppressed   []string
		warned, said []int
	}
	type result struct{ null, floor, shim, bare *row }
	results := map[string]*result{}
	runUnit := func(unit, result string, wait bool) time.Duration {
		if out, err := b.Systemctl(ctx, "start", unit); err != nil {
			t.Fatal(err, out)
		}
		if wait {
			if err := waitInactive(ctx, b, unit, 5*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		d, err := readNS(result)
		if err != nil {
			t.Fatal(unit, ": ", err)
		}
		return d
	}
	for _, w := range writers {
		results[w.key] = &result{
			null:  &row{name: "bound: the child's stderr on /dev/null"},
			floor: &row{name: "floor: a pipe drained as cat(1) does (blocking 1 MiB reads, discarded)"},
			shim:  &row{name: "the shim, shipped unit, lines to the journal"},
			bare:  &row{name: "bare unit, stderr straight to journald (stream)"},
		}
	}
	for r := 0; r < floodReps; r++ {
		for _, w := range writers {
			x := results[w.key]
			x.null.s = append(x.null.s, runUnit(fmt.Sprintf("flooddrain@null-%s-%d.service", w.key, r), res("null", w, r), false))
			x.floor.s = append(x.floor.s, runUnit(fmt.Sprintf("flooddrain@pipe-%s-%d.service", w.key, r), res("pipe", w, r), false))
			unit := fmt.Sprintf("virtiofsd@flood%s%d.service", w.key, r)
			x.shim.s = append(x.shim.s, runUnit(unit, res("shim", w, r), true))
			x.shim.got = append(x.shim.got, settledCount(ctx, b, unit))
			f, dr, su, wa, sa := shimCounts(ctx, b, unit)
			x.shim.fwd, x.shim.dropped, x.shim.warned = append(x.shim.fwd, f), append(x.shim.dropped, dr), append(x.shim.warned, wa)
			x.shim.suppressed, x.shim.said = append(x.shim.suppressed, su), append(x.shim.said, sa)
			unit = fmt.Sprintf("floodbare@%s-%d.service", w.key, r)
			x.bare.s = append(x.bare.s, runUnit(unit, res("bare", w, r), false))
			x.bare.got = append(x.bare.got, settledCount(ctx, b, unit))
		}
	}
	s.printf("A child writes %d lines to stderr in the Rust virtiofsd's format (`%sflood line N`), one write(2)\n"+
		"per line, after the readiness line; the figure is the child's own wall time from its first flood line to its\n"+
		"last. Two writers: a compiled one, and an interpreted one that spends microseconds per line. %d runs of each\n"+
		"variant, interleaved, all in one private systemd (journald with its defaults: RateLimitIntervalSec=30s,\n"+
		"RateLimitBurst=10000 per unit), each run in its own unit instance so that no run inherits another's\n"+
		"rate-limit budget. The floor and the bound run in a unit (`flooddrain@.service`) carrying the shipped unit's\n"+
		"sandbox lines and GOMAXPROCS=1, like the shim: a Go parent drains the child's stderr with blocking read(2)s of\n"+
		"1 MiB from a 1 MiB pipe, as cat(1) does (the floor of a reader that takes every line as it comes), or gives it\n"+
		"/dev/null (the absolute bound).\n", floodLines, rustPrefix, floodReps)
	for _, w := range writers {
		x := results[w.key]
		base := x.floor.s.Median()
		s.printf("\n%s:\n\n| variant | median | min | max | median / floor |\n|---|---|---|---|---|\n", w.name)
		for _, r := range []*row{x.null, x.floor, x.shim, x.bare} {
			s.printf("| %s | %s | %s | %s | %.2f |\n", r.name, ms(r.s.Median()), ms(r.s.Min()), ms(r.s.Max()), float64(r.s.Median())/float64(base))
		}
		ratio := float64(x.shim.s.Median()) / float64(base)
		s.printf("\nGoal: the shim <= 1.2 x the floor: %.2f (%s).\n", ratio, goal(ratio <= 1.2))
		s.printf("\nWhere the lines went, per run (of %d flood lines written):\n\n", floodLines)
		s.printf("| run | flood lines in the journal, shim | bare unit | shim's lines_forwarded | lines_dropped (queue full) | VIRTIOFSD_DROPPED (sum) | lines_suppressed (rate limit) | VIRTIOFSD_SUPPRESSED (sum) |\n|---|---|---|---|---|---|---|---|\n")
		for r := 0; r < floodReps; r++ {
			s.printf("| %d | %d | %d | %s | %s | %d | %s | %d |\n", r, x.shim.got[r], x.bare.got[r], x.shim.fwd[r], x.shim.dropped[r], x.shim.warned[r], x.shim.suppressed[r], x.shim.said[r])
		}
		t.Logf("flood %s medians: null %v, floor %v, shim %v, bare %v", w.key, x.null.s.Median(), base, x.shim.s.Median(), x.bare.s.Median())
	}
	s.printf("\nWhy lines are missing. The bare unit: journald's per-unit rate limit. RateLimitBurst=10000 is scaled\n" +
		"by the free space of the journal's file system (systemd's burst_modulate: x (log2(free bytes) - 16) / 4,\n" +
		"x3.5 with about 1 GiB free here), and journald discards the rest; it reports \"Suppressed N messages\"\n" +
		"only when the unit logs again after the interval, which a finished unit never does.\n" +
		"The shim applies the same limit itself (journal.JournaldLimits: journald.conf, the burst scaled by the free space,\n" +
		"per priority pool, plus a margin of 64 lines): the lines journald would discard are not sent but counted\n" +
		"(lines_suppressed) and said once, as journald says it (\"Suppressed N messages\", VIRTIOFSD_SUPPRESSED=N).\n" +
		"The lines it keeps wait in its queue (a burst's worth) and go to journald once the flood pauses, so journald's\n" +
		"work does not take a CPU from virtiofsd. Its own entries (\"started virtiofsd\", ...) count in the same\n" +
		"journald budget, hence a few flood lines fewer than the bare unit, for as many entries in all. A queue\n" +
		"overflow would be dropped, counted (lines_dropped) and said once (VIRTIOFSD_DROPPED=N).\n")
	s.printf("\nWhat slowed the writer before issue 13, found with this profile: journald's CPU (every line the shim\n" +
		"sent during the flood, most of which journald then discarded for its rate limit) took one of the two CPUs, and\n" +
		"the shim woke up for every line of a slow writer (a read, a classification with allocations, a queue\n" +
		"hand-off, per line). Now the shim sends nothing journald would discard, holds what it sends until the flood\n" +
		"pauses, reads a flood in large reads from a 1 MiB pipe, and allocates nothing for a line it does not keep.\n" +
		"Last, its pauses during a flood did not spare the writer while the pipe sat in Go's netpoller: a pipe\n" +
		"registered with epoll wakes the poller at every write(2) (Linux's pipe poll_usage), pause or not. The shim\n" +
		"now reads virtiofsd's stderr with blocking read(2)s outside the netpoller (launch.stderrPipe), so that\n" +
		"during a pause nobody waits on the pipe and a write costs the writer its copy only. That is why the shim\n" +
		"comes out below the floor: a reader that takes every line as it comes (cat) wakes at every write into an\n" +
		"empty pipe, and each wake-up costs the writer; the shim, pausing, lets the lines gather.\n")
	s.printf("\n%s", floodProfile(t, ctx, b, syms, filepath.Join(dir, "perf.data"), prof))
	s.measuredBy("flood", "flood_test.go")
}

// floodProfile runs one more flood of w under an unstripped build of the
// shim (virtiofsd@floodprof) while perf samples every CPU, and says where
// the CPU time went.
func floodProfile(t *testing.T, ctx context.Context, b *shimbox.Box, syms, data string, w floodWriter) string {
	var out strings.Builder
	out.WriteString("Profile of one more run (the interpreted writer, an unstripped build of the shim for symbols), every CPU sampled:\n")
	out.WriteString("`perf record -a -g -e cpu-clock -F 999` during the run, then `perf report --sort comm` and, for the shim,\n`perf report --sort comm,dso,sym`, its rows (other work on the machine shows up too).\n\n")
	if _, err := exec.LookPath("perf"); err != nil {
		out.WriteString("Not measured: perf is missing (apt-get install linux-perf).\n")
		return out.String()
	}
	build := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-o", syms, "./cmd/virtiofsd-shim")
	build.Dir = testdir.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", syms, err, o)
	}
	rec := exec.Command("perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "999", "-o", data)
	if err := rec.Start(); err != nil {
		fmt.Fprintf(&out, "Not measured: perf record: %v\n", err)
		return out.String()
	}
	time.Sleep(500 * time.Millisecond)
	unit := "virtiofsd@floodprof.service"
	if o, err := b.Systemctl(ctx, "start", unit); err != nil {
		t.Fatal(err, o)
	}
	if err := waitInactive(ctx, b, unit, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // journald's tail
	rec.Process.Signal(os.Interrupt)
	rec.Wait()
	if d, err := readNS(filepath.Join(filepath.Dir(data), "prof.ns")); err == nil {
		fmt.Fprintf(&out, "The writer's time in this run: %s.\n\n", ms(d))
	}
	report := func(args ...string) string {
		o, err := exec.Command("perf", append([]string{"report", "-i", data, "--stdio", "--no-children"}, args...)...).Output()
		if err != nil {
			return "perf report: " + err.Error()
		}
		var keep []string
		for _, l := range strings.Split(string(o), "\n") {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(strings.TrimSpace(l), "|") ||
				strings.HasPrefix(strings.TrimSpace(l), "-") || strings.HasPrefix(strings.TrimSpace(l), "---") {
				continue
			}
			keep = append(keep, l)
			if len(keep) == 20000 {
				break
			}
		}
		return strings.Join(keep, "\n")
	}
	byComm := strings.Split(report("--sort", "comm", "-g", "none", "--percent-limit", "1"), "\n")
	if len(byComm) > 15 {
		byComm = byComm[:15]
	}
	fmt.Fprintf(&out, "CPU time by command (%% of all samples, >= 1%%):\n\n```\n%s\n```\n\n", strings.Join(byComm, "\n"))
	var inShim []string
	for _, l := range strings.Split(report("--sort", "comm,dso,sym", "-g", "none", "--percent-limit", "0.05"), "\n") {
		if strings.Contains(l, "virtiofsd-shim-") && len(inShim) < 30 {
			inShim = append(inShim, l)
		}
	}
	fmt.Fprintf(&out, "Inside the shim (%% of all samples, >= 0.05%%):\n\n```\n%s\n```\n", strings.Join(inShim, "\n"))
	return out.String()
}
