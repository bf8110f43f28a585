package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/unitprop"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

func init() {
	register(10, "activation", reportActivation)
	register(40, "memory", reportMemory)
	register(60, "scale", reportScale)
}

// benchDir makes a folder under /var/tmp (which the boxes see as the host
// does) for shares, helpers and result files, removed at the end.
func benchDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/var/tmp", "bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// bareUnits run the C virtiofsd directly on a systemd socket, as the
// baseline: the same socket settings and start limits as the project's units.
func bareUnits(share string) map[string]string {
	return map[string]string{
		"bare@.socket": `[Unit]
Description=bare virtiofsd socket for %i (benchmark baseline)

[Socket]
ListenStream=/run/bare/%i.sock
SocketMode=0660
DirectoryMode=0755
Accept=no
RemoveOnStop=yes
TriggerLimitIntervalSec=10s
TriggerLimitBurst=60
`,
		"bare@.service": `[Unit]
Description=bare virtiofsd for %i (benchmark baseline)
Requires=bare@%i.socket
After=bare@%i.socket
StartLimitIntervalSec=10s
StartLimitBurst=30

[Service]
Type=simple
ExecStart=` + virtiofsd.CVirtiofsd + ` --fd=3 -o source=` + share + ` -o cache=auto
`,
	}
}

// show reads one property of a unit in the box, for a report: empty when
// systemctl fails.
func show(ctx context.Context, b *shimbox.Box, unit, prop string) string {
	v, _ := unitprop.Property(ctx, b, unit, prop)
	return v
}

// waitInactive waits until unit is inactive (failed is an error).
func waitInactive(ctx context.Context, b *shimbox.Box, unit string, d time.Duration) error {
	st, err := unitprop.WaitInactive(ctx, b, unit, d)
	if err == nil && st == "failed" {
		return fmt.Errorf("%s failed", unit)
	}
	return err
}

// activationSamples per variant.
const activationSamples = 40

// backToBackSamples per variant, fewer than the units' StartLimitBurst=30.
const backToBackSamples = 25

// noMountSandbox turns off the lines of virtiofsd@.service that make systemd
// build a mount namespace at every start (exposure 3.5 -> 4.2): the drop-in
// docs/hardening.md offers to hosts with many mounts.
const noMountSandbox = `[Service]
PrivateMounts=no
ProtectControlGroups=no
ProtectKernelLogs=no
ProtectProc=default
`

// activationSettle is the pause, with every unit inactive, before each
// sample: a cold start on a quiet system, not on the last one's teardown.
const activationSettle = 200 * time.Millisecond

func reportActivation(t *testing.T, s *section) {
	s.title = "Activation latency"
	ctx := context.Background()
	dir := benchDir(t)
	bareShare := filepath.Join(dir, "bare")
	if err := os.Mkdir(bareShare, 0o755); err != nil {
		t.Fatal(err)
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-activation", ExtraUnits: bareUnits(bareShare)})
	if _, err := b.AddInstance("act"); err != nil {
		t.Fatal(err)
	}
	// The unit's mount-namespace sandboxing costs time at every start; a
	// variant without it tells the shim's own cost from the sandbox's.
	if _, err := b.AddInstance("actn"); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteFile("/etc/systemd/system/virtiofsd@actn.service.d/no-mount-sandbox.conf", []byte(noMountSandbox), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@act.socket", "virtiofsd@actn.socket", "bare@act.socket"); err != nil {
		t.Fatal(err, out)
	}
	vs := []coldTarget{
		{name: "bare virtiofsd (bare@.socket + bare@.service)", unit: "bare@act.service", sock: b.Path("/run/bare/act.sock")},
		{name: "shim (virtiofsd@.socket + virtiofsd@.service), config SHARED_DIR only", unit: "virtiofsd@act.service", sock: b.Socket("act")},
		{name: "shim, unit without its mount-namespace sandboxing (drop-in below)", unit: "virtiofsd@actn.service", sock: b.Socket("actn")},
	}
	s.printf("Connect to the socket until the first vhost-user reply (GET_FEATURES, vhostuser.Probe), cold: the service is\n"+
		"not running before each sample. One private systemd runs the project's units and a bare unit pair running\n"+
		"%s --fd=3 directly (Type=simple, same socket settings and start limits); the variants are\n"+
		"interleaved, their order rotated each round. Two modes: \"quiet\" waits until every unit measured is inactive,\n"+
		"then %v more (a cold start on an idle system); \"back to back\" only waits for the measured unit to be\n"+
		"inactive (the previous sessions may still be tearing down, and the CPUs are not idle).\n", virtiofsd.CVirtiofsd, activationSettle)
	var ratios []float64
	modes := []struct {
		name   string
		rounds int
		p      pause
	}{{"quiet", activationSamples, quiet(activationSettle)}, {"back to back", backToBackSamples, backToBack}}
	for _, m := range modes {
		if m.p.backToBack {
			// Stay under the units' start limits (30 starts in 10 s):
			// start with a fresh window, and make fewer starts.
			time.Sleep(10 * time.Second)
		}
		samples := coldRounds(t, ctx, b, vs, m.rounds, m.p)
		bare := samples[0].Median()
		s.printf("\n%s:\n\n", m.name)
		latencyTable(s, vs, samples)
		for i, v := range vs {
			t.Logf("%s, %s: %v", m.name, v.unit, samples[i].Sorted())
		}
		ratios = append(ratios, float64(samples[1].Median())/float64(bare))
	}
	// Where the shim's extra time goes: systemd's sandbox (the variant
	// without it), the shim's own exec and Go start-up, and the --version
	// probe of virtiofsd (cached per binary under RuntimeDirectory=).
	shim, err := shimbox.Binary()
	if err != nil {
		t.Fatal(err)
	}
	s.printf("\nWhere the difference goes: exec-to-exit of short commands on the host (median of %d runs each):\n\n", execRuns)
	s.printf("| command | median |\n|---|---|\n")
	for _, c := range [][]string{{"/bin/true"}, {shim, "version"}, {virtiofsd.CVirtiofsd, "--version"}} {
		d, err := execMedian(c)
		if err != nil {
			t.Fatal(err)
		}
		name := c[0]
		if c[0] == shim {
			name = "virtiofsd-shim"
		}
		s.printf("| `%s` | %s |\n", strings.Join(append([]string{name}, c[1:]...), " "), ms(d))
	}
	s.printf("\nThe drop-in of the third variant:\n\n```\n%s```\n", noMountSandbox)
	s.printf("\nGoal: the shipped unit's median <= 2.0 x the bare one (config as a user writes it, SHARED_DIR only): quiet %.2f (%s), back to back %.2f (%s).\n",
		ratios[0], goal(ratios[0] <= 2.0), ratios[1], goal(ratios[1] <= 2.0))
	s.printf("The bare unit has no sandbox at all; the shipped unit's mount-namespace lines are most of the difference " +
		"(compare the third variant), paid once per VM start; \"Sandbox cost\" below measures each line and the shim's own share.\n")
	s.measuredBy("activation", "system_test.go")
}

// execRuns is how many times execMedian runs a command.
const execRuns = 50

// execMedian runs argv execRuns times and returns the median wall time.
func execMedian(argv []string) (time.Duration, error) {
	var s Sample
	for i := 0; i < execRuns; i++ {
		start := time.Now()
		if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
			return 0, fmt.Errorf("%v: %w", argv, err)
		}
		s = append(s, time.Since(start))
	}
	return s.Median(), nil
}

// memoryInstances is how many live instances the memory figure holds.
const memoryInstances = 50

// memoryVariants are the shim's variants the memory figure compares: as
// shipped (the unit sets GOMAXPROCS=1), a Go runtime setting a unit drop-in
// could add, and a build without -buildmode=pie (the trade: no ASLR for the
// binary's own image, no relocated .data.rel.ro pages dirty in every process).
var memoryVariants = []struct {
	prefix, env string
	nonPIE      bool
}{
	{"m", "", false},
	{"g", "GOGC=50", false},
	{"n", "", true},
}

// memoryResult sums memory over one variant's processes.
type memoryResult struct {
	shim, vfs   memory
	shimN, vfsN int
}

// measureMemory starts memoryInstances sessions of the instances named
// prefix0..., each with a connected client, and sums the memory of their
// shims and virtiofsd processes; it ends the sessions before returning.
func measureMemory(t *testing.T, ctx context.Context, b *shimbox.Box, prefix string) memoryResult {
	var sockets []string
	for i := 0; i < memoryInstances; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if _, err := b.AddInstance(name); err != nil {
			t.Fatal(err)
		}
		sockets = append(sockets, "virtiofsd@"+name+".socket")
	}
	if out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, sockets...)...); err != nil {
		t.Fatal(err, out)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		for i := 0; i < memoryInstances; i++ {
			if err := waitInactive(ctx, b, fmt.Sprintf("virtiofsd@%s%d.service", prefix, i), 30*time.Second); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := 0; i < memoryInstances; i++ {
		c, err := b.Dial(fmt.Sprintf("%s%d", prefix, i), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the sessions settle
	all := proctree.All()
	inBox := map[int]bool{}
	for _, pid := range b.Processes() {
		inBox[pid] = true
	}
	var r memoryResult
	for _, p := range all {
		if !inBox[p.PID] || p.Comm != "virtiofsd-shim" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if !strings.Contains(string(cmdline), "--instance="+prefix) {
			continue
		}
		m, err := readMemory(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		r.shim.add(m)
		r.shimN++
		for _, c := range proctree.Descendants(all, p.PID) {
			if c.Comm != "virtiofsd" {
				continue
			}
			m, err := readMemory(c.PID)
			if err != nil {
				t.Fatal(err)
			}
			r.vfs.add(m)
			r.vfsN++
		}
	}
	if r.shimN != memoryInstances {
		t.Fatalf("found %d shims, want %d", r.shimN, memoryInstances)
	}
	return r
}

func reportMemory(t *testing.T, s *section) {
	s.title = "Memory"
	ctx := context.Background()
	units := map[string]string{}
	nonPIE := filepath.Join(benchDir(t), "nonpie", "virtiofsd-shim")
	for _, v := range memoryVariants[1:] {
		dropIn := "[Service]\n"
		if v.env != "" {
			dropIn += "Environment=" + v.env + "\n"
		}
		if v.nonPIE {
			dropIn += "ExecStart=\nExecStart=" + nonPIE + " run --instance=%i\n"
		}
		for i := 0; i < memoryInstances; i++ {
			units[fmt.Sprintf("virtiofsd@%s%d.service.d/bench.conf", v.prefix, i)] = dropIn
		}
	}
	// The shipped flags of scripts/build-binary.sh, without -buildmode=pie.
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", nonPIE, "./cmd/virtiofsd-shim")
	build.Dir = testdir.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", nonPIE, err, out)
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-memory", ExtraUnits: units})
	per := func(kb int64) string { return fmt.Sprintf("%.2f MiB", float64(kb)/1024/float64(memoryInstances)) }
	var shipped memoryResult
	s.printf("%d live instances in one private systemd, each serving a connected client (shimbox Dial, kept open),\n"+
		"after 2 s of rest. PSS and RSS from /proc/PID/smaps_rollup, summed over the processes, per instance:\n"+
		"the shim is one process; the C virtiofsd is two. The rows after the first run the shim with a unit drop-in\n"+
		"(Environment=, or ExecStart= of another build), one variant at a time (the previous sessions ended).\n\n", memoryInstances)
	s.printf("| per instance | PSS | PSS anon | PSS file | RSS |\n|---|---|---|---|---|\n")
	for k, v := range memoryVariants {
		r := measureMemory(t, ctx, b, v.prefix)
		name := "virtiofsd-shim, as shipped"
		switch {
		case v.env != "":
			name = "virtiofsd-shim, Environment=" + v.env
		case v.nonPIE:
			name = "virtiofsd-shim built without -buildmode=pie (not shipped)"
		}
		s.printf("| %s | %s | %s | %s | %s |\n", name, per(r.shim.Pss), per(r.shim.PssAnon), per(r.shim.PssFile), per(r.shim.Rss))
		if k == 0 {
			shipped = r
			s.printf("| C virtiofsd, both processes (%d processes for %d instances) | %s | %s | %s | %s |\n", r.vfsN, memoryInstances,
				per(r.vfs.Pss), per(r.vfs.PssAnon), per(r.vfs.PssFile), per(r.vfs.Rss))
		}
		t.Logf("memory per instance, %q: shim PSS %.0f kB, virtiofsd PSS %.0f kB", v.env,
			float64(r.shim.Pss)/memoryInstances, float64(r.vfs.Pss)/memoryInstances)
	}
	for _, f := range floorPrograms {
		r := floorMemory(t, f.dir)
		s.printf("| %s | %s | %s | %s | %s |\n", f.name, per(r.Pss), per(r.PssAnon), per(r.PssFile), per(r.Rss))
	}
	shimPer := float64(shipped.shim.Pss) / 1024 / memoryInstances
	s.printf("\nGoal, as shipped: the shim's PSS <= 1.0 MiB per instance: %.2f MiB (%s); stretch, no more than virtiofsd's own (%s).\n",
		shimPer, goal(shimPer <= 1.0), goal(shipped.shim.Pss <= shipped.vfs.Pss))
	s.printf("Most of the difference to a non-PIE build is the binary's .data.rel.ro: about 0.5 MiB of Go type data, pointers\n"+
		"the loader relocates at every start of a position-independent executable, so every process has its own dirty\n"+
		"copy. Its size follows the types linked into the one binary, every command's: go-systemd's activation package\n"+
		"alone brought crypto/tls and about 50 KB of it (the shim now reads LISTEN_FDS itself), libvirtxml brings about\n"+
		"35 KB, and a build of `run` alone measured about 0.2 MiB less per process. The rest is Go's floor: the heap,\n"+
		"mostly thread stacks (os/signal alone adds two threads) and one span per size class in use, and the runtime's\n"+
		"own structures: the floor rows, %d processes of each, built as the shim is (test/bench/testdata/floor).\n"+
		"A Go PIE that only sleeps already takes more than the C virtiofsd's whole PSS, and one that links only what\n"+
		"the run path needs comes near the goal before any of the shim's own work: 1.0 MiB is out of reach of a\n"+
		"position-independent Go build, and the non-PIE row shows the price of keeping address space randomization\n"+
		"for a service that runs as root.\n", memoryInstances)
	s.measuredBy("memory", "system_test.go")
}

// floorPrograms are Go's memory floor for the shim, measured beside it.
var floorPrograms = []struct{ dir, name string }{
	{"sleep", "floor: a Go program that only sleeps (not shipped)"},
	{"runlibs", "floor: a Go program that links only the run path's libraries: logrus, go-systemd's journal and daemon, net, os/exec, flag, os/signal (not shipped)"},
}

// floorMemory builds testdata/floor/DIR with the shipped build flags
// (scripts/build-binary.sh), runs memoryInstances of it with the unit's
// GOMAXPROCS=1, and sums their memory after 2 s of rest.
func floorMemory(t *testing.T, dir string) memory {
	bin := filepath.Join(benchDir(t), "floor-"+dir)
	build := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-buildvcs=false", "-ldflags", "-s -w", "-o", bin,
		"./test/bench/testdata/floor/"+dir)
	build.Dir = testdir.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", bin, err, out)
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	for i := 0; i < memoryInstances; i++ {
		p := exec.Command(bin)
		p.Env = append(os.Environ(), "GOMAXPROCS=1")
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	time.Sleep(2 * time.Second)
	var sum memory
	for _, p := range procs {
		m, err := readMemory(p.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		sum.add(m)
	}
	return sum
}

// scaleInstances is how many sockets the scale figure enables.
const scaleInstances = 200

func reportScale(t *testing.T, s *section) {
	s.title = "Scale"
	ctx := context.Background()
	b := shimbox.New(t, shimbox.Options{Name: "bench-scale"})
	var sockets, names []string
	for i := 0; i < scaleInstances; i++ {
		name := fmt.Sprintf("s%d", i)
		if _, err := b.AddInstance(name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		sockets = append(sockets, "virtiofsd@"+name+".socket")
	}
	start := time.Now()
	if out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, sockets...)...); err != nil {
		t.Fatal(err, out)
	}
	enabled := time.Since(start)
	for {
		missing := 0
		for _, n := range names {
			if st, err := os.Stat(b.Socket(n)); err != nil || st.Mode()&os.ModeSocket == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("%d sockets still missing after 5 min", missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
	listening := time.Since(start)
	out, _ := b.Systemctl(ctx, append([]string{"is-active"}, sockets...)...)
	active := strings.Count(out, "active\n") - strings.Count(out, "inactive\n")
	s.printf("%d instances configured (not timed), then `systemctl enable --now` of their %d sockets in one command.\n\n", scaleInstances, scaleInstances)
	s.printf("| step | time |\n|---|---|\n")
	s.printf("| `systemctl enable --now` returns | %s |\n", ms(enabled))
	s.printf("| all %d socket files exist (listening) | %s |\n", scaleInstances, ms(listening))
	s.printf("\n`systemctl is-active` afterwards: %d of %d sockets active.\n", active, scaleInstances)
	s.measuredBy("scale", "system_test.go")
	t.Logf("scale: enable %v, all listening %v", enabled, listening)
}
