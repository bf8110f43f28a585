package bench

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/guestload"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// frontOff is the data-path variant of the shipped unit with FRONT=no: the
// base of the front's cost on the Rust leg.
const frontOff = "nofront"

// bareDefaultNofile is the data-path variant of the bare unit with
// systemd's default LimitNOFILE= (issue 27's bare unit) on the Rust leg.
const bareDefaultNofile = "bdef"

// shellRun is what one boot measured of the shell workload: the guest's
// time (whole and per step), the unit's CPU time (its cgroup) and
// virtiofsd's (the cgroup's but the shim's).
type shellRun struct {
	guest, cpu, tree time.Duration
	steps            map[string]time.Duration
	nofile           string // virtiofsd's open-file limit, soft/hard, read at the begin line
}

// takeShell moves the shell workload's figures, read under key like a
// group's, out of the groups' maps (so that no sum over the groups counts
// them) into r.shell.
func (r *dpRun) takeShell(key string, rec guestload.Record) {
	r.shell = shellRun{guest: rec.Duration(), cpu: r.cpu[key], tree: r.tree[key], steps: map[string]time.Duration{}, nofile: r.shell.nofile}
	for step, ns := range rec.Steps {
		r.shell.steps[step] = time.Duration(ns)
	}
	for _, m := range []map[string]time.Duration{r.guest, r.cpu, r.tree, r.ticks} {
		delete(m, key)
	}
	delete(r.n, key)
	delete(r.unit, key)
}

// openFileLimits are the open-file limits (soft/hard, /proc/PID/limits) of
// the unit's processes but the shim, the distinct ones joined by ", ".
func (c *cpuSource) openFileLimits(unit string) string {
	c.mu.Lock()
	cg := c.cg[unit]
	c.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, pid := range c.processes(cg) {
		if comm, _, err := processCPU(pid); err != nil || comm == shimComm {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
				if f := strings.Fields(rest); len(f) >= 2 && !seen[f[0]+"/"+f[1]] {
					seen[f[0]+"/"+f[1]] = true
					out = append(out, f[0]+"/"+f[1])
				}
			}
		}
	}
	return strings.Join(out, ", ")
}

// shellIntro says what the shell workload is.
func shellIntro(s *section, p guestload.ShellParams) {
	s.printf("\nEach boot first runs the shell workload of issue 27 (guestload.ShellScript), on the auto share, before\n"+
		"test/guestload's: the guest's busybox sh does `echo $i > f$i` for %d files, `ls -l` twice, `read x < f$i`\n"+
		"for each, `rm f$i` for each (one rm process each), a `dd` of %d MiB with conv=fsync, drop_caches, and `dd`\n"+
		"of the file back. Many small synchronous operations, each a round trip the shell waits for. The guest\n"+
		"times itself with /proc/uptime (10 ms steps); the host reads the CPU times at its begin and result lines,\n"+
		"as for a group. Its tables follow each leg's.\n", p.Files, p.MiB)
}

// shellFigure is one figure of a shell run.
type shellFigure struct {
	name string
	get  func(shellRun) time.Duration
}

var shellFigures = []shellFigure{
	{"guest time", func(r shellRun) time.Duration { return r.guest }},
	{"virtiofsd's CPU", func(r shellRun) time.Duration { return r.tree }},
	{"the unit's CPU", func(r shellRun) time.Duration { return r.cpu }},
}

// shellRatios are a variant's shell figure against a base variant's: the
// ratio of the medians over the runs, and the ratios paired by round
// (sorted).
func shellRatios(runs map[string][]dpRun, base, key string, f shellFigure) (ofMedians float64, paired []float64) {
	var b, v Sample
	for i, r := range runs[key] {
		v = append(v, f.get(r.shell))
		if i < len(runs[base]) && f.get(runs[base][i].shell) > 0 {
			paired = append(paired, float64(f.get(r.shell))/float64(f.get(runs[base][i].shell)))
		}
	}
	for _, r := range runs[base] {
		b = append(b, f.get(r.shell))
	}
	sort.Float64s(paired)
	if b.Median() == 0 {
		return math.NaN(), paired
	}
	return float64(v.Median()) / float64(b.Median()), paired
}

// shellTables prints the shell workload's figures of a leg: every run,
// then each variant's medians against the bare unit's.
func shellTables(s *section, leg shimbox.Platform, variants []dpVariant, runs map[string][]dpRun) {
	flavor := "C"
	if leg.Rust() {
		flavor = "Rust"
	}
	s.printf("\n#### The shell workload, %s virtiofsd\n\nEach run (one guest boot), in the order measured within its round; in brackets the ratio to the bare\n"+
		"unit's run of the same round; then the guest's time of each step:\n\n| round | variant |", flavor)
	for _, f := range shellFigures {
		s.printf(" %s |", f.name)
	}
	s.printf(" %s |\n|---|---|%s\n", strings.Join(guestload.ShellSteps, " | "), strings.Repeat("---|", len(shellFigures)+len(guestload.ShellSteps)))
	rounds := 0
	for _, v := range variants {
		rounds = max(rounds, len(runs[v.key]))
	}
	for round := 0; round < rounds; round++ {
		for k := range variants {
			v := variants[(round+k)%len(variants)]
			if round >= len(runs[v.key]) {
				continue
			}
			r := runs[v.key][round].shell
			s.printf("| %d | %s |", round, v.name)
			for _, f := range shellFigures {
				s.printf(" %s", fmtMs(f.get(r)))
				if bare := runs["bare"]; v.key != "bare" && round < len(bare) && f.get(bare[round].shell) > 0 {
					s.printf(" (%.2f)", float64(f.get(r))/float64(f.get(bare[round].shell)))
				}
				s.printf(" |")
			}
			for _, step := range guestload.ShellSteps {
				s.printf(" %s |", fmtMs(r.steps[step]))
			}
			s.printf("\n")
		}
	}
	s.printf("\nvirtiofsd's open-file limit (soft/hard, /proc/PID/limits at the workload's start), first run of each variant:")
	for i, v := range variants {
		if len(runs[v.key]) > 0 {
			sep := ","
			if i == 0 {
				sep = ""
			}
			s.printf("%s %s %s", sep, v.name, runs[v.key][0].shell.nofile)
		}
	}
	s.printf(".\n")
	s.printf("\nMedian of the runs; against the bare unit: the ratio of the medians, and the median of the ratios paired\n" +
		"by round (lowest to highest):\n\n| variant | runs |")
	for _, f := range shellFigures {
		s.printf(" %s | ratio | paired |", f.name)
	}
	s.printf("\n|---|---|%s\n", strings.Repeat("---|---|---|", len(shellFigures)))
	for _, v := range variants {
		s.printf("| %s | %d |", v.name, len(runs[v.key]))
		for _, f := range shellFigures {
			var x Sample
			for _, r := range runs[v.key] {
				x = append(x, f.get(r.shell))
			}
			s.printf(" %s |", fmtMs(x.Median()))
			if v.key == "bare" {
				s.printf(" 1.00 | |")
				continue
			}
			ratio, paired := shellRatios(runs, "bare", v.key, f)
			s.printf(" %.2f | %s |", ratio, fmtPaired(paired))
		}
		s.printf("\n")
	}
	for _, v := range variants {
		if v.key == "ship" {
			shellGoal(s, runs, "bare", v.key, fmt.Sprintf("%s against the bare unit (%s)", v.name, flavor))
		}
	}
	if len(runs[bareDefaultNofile]) > 0 {
		s.printf("\nLimitNOFILE=1000000 alone (issue 27's bisection, %s): the bare unit (with the shipped unit's limit, as\n"+
			"above) against the bare unit with systemd's default, ratio of the medians and paired by round:\n\n| figure | ratio | paired |\n|---|---|---|\n", flavor)
		for _, f := range shellFigures {
			ratio, paired := shellRatios(runs, bareDefaultNofile, "bare", f)
			s.printf("| %s | %.2f | %s |\n", f.name, ratio, fmtPaired(paired))
		}
	}
}

// shellGoal prints whether the variant's shell figures (ratio of the
// medians) are within 1.03 x the base's.
func shellGoal(s *section, runs map[string][]dpRun, base, key, what string) {
	g, gp := shellRatios(runs, base, key, shellFigures[0])
	c, cp := shellRatios(runs, base, key, shellFigures[1])
	s.printf("\nGoal, the shell workload, %s: guest time <= 1.03x: %.2f (%s; paired median %.2f); "+
		"virtiofsd's CPU <= 1.03x: %.2f (%s; paired median %.2f).\n", what, g, goal(g <= 1.03), medianOf(gp), c, goal(c <= 1.03), medianOf(cp))
}

func fmtPaired(x []float64) string {
	if len(x) == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f (%.2f to %.2f)", medianOf(x), x[0], x[len(x)-1])
}

// frontTables prints the front's cost on the data path (issue 24): the
// shipped unit (FRONT=auto: the front on) against the shipped unit with
// FRONT=no, for test/guestload's groups and the shell workload.
func frontTables(s *section, variants []dpVariant, runs map[string][]dpRun, shell bool) {
	if len(runs[frontOff]) == 0 || len(runs["ship"]) == 0 {
		return
	}
	keys := dpKeys()
	s.printf("\n#### The front's cost on the data path (Rust)\n\n"+
		"The shipped unit (FRONT=auto, the default: the shim is the VM's end of the socket and relays the\n"+
		"vhost-user messages, the rings stay between QEMU and virtiofsd) against %s, %d and %d runs,\n"+
		"interleaved in the same rounds. test/guestload's groups: the geometric mean over the ten groups of the\n"+
		"medians per operation; paired by round: CPU time summed over the groups, median (lowest to highest).\n\n"+
		"| figure | FRONT=auto / FRONT=no, geometric mean | paired by round, metadata groups | paired by round, streaming groups |\n|---|---|---|---|\n",
		variantName(variants, frontOff), len(runs["ship"]), len(runs[frontOff]))
	for _, m := range []metric{mTree, mCgroup, mGuest} {
		s.printf("| %s | %.2f |", m, geoMeanRatio(runs, frontOff, "ship", keys, m))
		for _, stream := range []bool{false, true} {
			var x []float64
			for i, r := range runs["ship"] {
				if i < len(runs[frontOff]) && sumGroups(runs[frontOff][i], m, stream) > 0 {
					x = append(x, float64(sumGroups(r, m, stream))/float64(sumGroups(runs[frontOff][i], m, stream)))
				}
			}
			sort.Float64s(x)
			s.printf(" %s |", fmtPaired(x))
		}
		s.printf("\n")
	}
	c, cg, g := geoMeanRatio(runs, frontOff, "ship", keys, mTree), geoMeanRatio(runs, frontOff, "ship", keys, mCgroup), geoMeanRatio(runs, frontOff, "ship", keys, mGuest)
	s.printf("\nGoal, the front's cost, test/guestload, <= 1.03x FRONT=no: the service's CPU (virtiofsd and the shim, where the front runs) %.2f (%s); "+
		"virtiofsd's CPU %.2f (%s); guest time %.2f (%s).\n", cg, goal(cg <= 1.03), c, goal(c <= 1.03), g, goal(g <= 1.03))
	if !shell {
		return
	}
	s.printf("\nThe shell workload, FRONT=auto against FRONT=no: ratio of the medians, and the median of the ratios paired by\n" +
		"round (lowest to highest):\n\n| figure | ratio | paired |\n|---|---|---|\n")
	for _, f := range shellFigures {
		ratio, paired := shellRatios(runs, frontOff, "ship", f)
		s.printf("| %s | %.2f | %s |\n", f.name, ratio, fmtPaired(paired))
	}
	u, up := shellRatios(runs, frontOff, "ship", shellFigures[2])
	s.printf("\nGoal, the shell workload, the front's cost (FRONT=auto against FRONT=no): the unit's CPU (virtiofsd and the shim, "+
		"where the front runs) <= 1.03x: %.2f (%s; paired median %.2f).\n", u, goal(u <= 1.03), medianOf(up))
	shellGoal(s, runs, frontOff, "ship", "FRONT=auto against FRONT=no (the front's cost)")
}
