package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

func init() { register(88, "storm", reportStorm) }

var (
	stormInstances = flag.Int("storm-instances", 150, "instances of each variant in the boot storm")
	stormRounds    = flag.Int("storm-rounds", 3, "storms per variant (interleaved)")
)

// stormVariant is one kind of instance the storm connects to.
type stormVariant struct {
	name    string
	prefix  string // instance names prefix0..., or the bare template's
	bare    bool
	standby bool
}

func (v stormVariant) unit(i int) string {
	if v.bare {
		return fmt.Sprintf("%s@%d.service", v.prefix, i)
	}
	return fmt.Sprintf("virtiofsd@%s%d.service", v.prefix, i)
}

func (v stormVariant) socketUnit(i int) string {
	return strings.TrimSuffix(v.unit(i), ".service") + ".socket"
}

func (v stormVariant) socket(b *shimbox.Box, i int) string {
	if v.bare {
		return b.Path(fmt.Sprintf("/run/%s/%d.sock", v.prefix, i))
	}
	return b.Socket(fmt.Sprintf("%s%d", v.prefix, i))
}

// stormResult is one storm.
type stormResult struct {
	replies   Sample        // each client's connect-to-first-reply
	systemd   time.Duration // the box's pid 1 CPU time (utime+stime) from the release until the last reply
	box       time.Duration // every process of the box (its cgroup's cpu.stat), same interval
	wall      time.Duration // release to the last reply
	answered  int
	firstFail error
}

// pidCPU is a process's utime+stime (processCPU), 0 when it cannot be read.
func pidCPU(pid int) time.Duration {
	_, d, _ := processCPU(pid)
	return d
}

// boxCPU is the CPU time of every process of the box: usage_usec of its
// cgroup in the unified hierarchy (0 without one).
func boxCPU(b *shimbox.Box) time.Duration {
	d, _ := cgroupCPU(filepath.Join("/sys/fs/cgroup/unified", newCPUSource(b).boxRoot()))
	return d
}

// storm connects one client to each socket at the same moment (the
// clients wait on one channel, dialled by goroutines already running) and
// times each until its first vhost-user reply. The connections stay open
// until every client is answered or has failed; then they are closed.
func storm(b *shimbox.Box, sockets []string) stormResult {
	var wg sync.WaitGroup
	release := make(chan struct{})
	lat := make([]time.Duration, len(sockets))
	errs := make([]error, len(sockets))
	conns := make([]net.Conn, len(sockets))
	var start time.Time
	for i, sock := range sockets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			c, err := vhostuser.Probe(sock, 2*time.Minute)
			lat[i] = time.Since(start)
			errs[i], conns[i] = err, c
		}()
	}
	time.Sleep(100 * time.Millisecond) // every goroutine waits on release
	cpu0, box0 := pidCPU(b.PID()), boxCPU(b)
	start = time.Now()
	close(release)
	wg.Wait()
	r := stormResult{wall: time.Since(start), systemd: pidCPU(b.PID()) - cpu0, box: boxCPU(b) - box0}
	for i := range sockets {
		if errs[i] != nil {
			if r.firstFail == nil {
				r.firstFail = fmt.Errorf("%s: %w", sockets[i], errs[i])
			}
			continue
		}
		r.answered++
		r.replies = append(r.replies, lat[i])
		conns[i].Close()
	}
	return r
}

// waitAll polls one property of many units (in chunks, one systemctl each)
// until ok holds for every value.
func waitAll(ctx context.Context, b *shimbox.Box, units []string, prop string, ok func(string) bool, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		bad, last := 0, ""
		for i := 0; i < len(units); i += 100 {
			chunk := units[i:min(i+100, len(units))]
			out, err := b.Systemctl(ctx, append([]string{"show", "-p", prop}, chunk...)...)
			if err != nil {
				return fmt.Errorf("systemctl show: %w: %s", err, out)
			}
			// One PROP=value line per unit, blank lines between units.
			var vals []string
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(l, prop+"="); ok {
					vals = append(vals, v)
				}
			}
			if len(vals) != len(chunk) {
				bad++
				continue
			}
			for _, v := range vals {
				if !ok(v) {
					bad, last = bad+1, v
				}
			}
		}
		if bad == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d units still not ready after %v (%s=%q)", bad, len(units), d, prop, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitStandbys waits until the running shim of each of the variant's n
// instances publishes, in its typed state, a virtiofsd waiting.
func waitStandbys(ctx context.Context, b *shimbox.Box, v stormVariant, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		bad, last := 0, ""
		for i := 0; i < n; i += 100 {
			var units []string
			for j := i; j < min(i+100, n); j++ {
				units = append(units, v.unit(j))
			}
			out, err := b.Systemctl(ctx, append([]string{"show", "-p", "MainPID", "--value"}, units...)...)
			if err != nil {
				return fmt.Errorf("systemctl show: %w: %s", err, out)
			}
			pids := strings.Fields(out)
			if len(pids) != len(units) {
				bad++
				continue
			}
			for k, p := range pids {
				pid, _ := strconv.Atoi(p)
				st, err := b.State(fmt.Sprintf("%s%d", v.prefix, i+k))
				if err != nil {
					return err
				}
				if !st.Live(pid) || st.Phase != state.Waiting {
					bad, last = bad+1, units[k]
				}
			}
		}
		if bad == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d standbys still not waiting after %v (%s)", bad, n, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func reportStorm(t *testing.T, s *section) {
	s.title = "Boot storm"
	ctx := context.Background()
	n := *stormInstances
	dir := benchDir(t)
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	variants := []stormVariant{
		{name: "bare virtiofsd units, no sandbox", prefix: "stb", bare: true},
		{name: "shipped units", prefix: "st"},
		{name: "shipped units + the no-mount-namespace drop-in (docs/hardening.md)", prefix: "stn"},
		{name: "shipped units, STANDBY=yes", prefix: "ss", standby: true},
	}
	units := bareTemplate("stb", "bare virtiofsd", virtiofsd.CVirtiofsd+" --fd=3 -o source="+share+" -o cache=auto")
	for i := 0; i < n; i++ {
		units[fmt.Sprintf("virtiofsd@stn%d.service.d/no-mount-sandbox.conf", i)] = noMountSandbox
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-storm", ExtraUnits: units})
	var sockets []string
	for _, v := range variants {
		for i := 0; i < n; i++ {
			if !v.bare {
				conf := "SHARED_DIR=" + share + "\nCACHE=auto\n"
				if v.standby {
					conf += "STANDBY=yes\n"
				}
				if err := b.Configure(fmt.Sprintf("%s%d", v.prefix, i), conf); err != nil {
					t.Fatal(err)
				}
			}
			sockets = append(sockets, v.socketUnit(i))
		}
	}
	if out, err := b.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := b.Systemctl(ctx, append([]string{"enable", "--now"}, sockets...)...); err != nil {
		t.Fatal(err, out)
	}
	unitsOf := func(v stormVariant) (us, socks []string) {
		for i := 0; i < n; i++ {
			us = append(us, v.unit(i))
			socks = append(socks, v.socket(b, i))
		}
		return us, socks
	}
	ready := func(v stormVariant) {
		us, _ := unitsOf(v)
		var err error
		if v.standby {
			err = waitStandbys(ctx, b, v, n, 3*time.Minute)
		} else {
			err = waitAll(ctx, b, us, "ActiveState", func(s string) bool { return s == "inactive" }, 3*time.Minute)
		}
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
	}

	results := make([][]stormResult, len(variants))
	for round := 0; round < *stormRounds; round++ {
		for k := range variants {
			i := (round + k) % len(variants)
			v := variants[i]
			for _, w := range variants {
				ready(w) // the last storm's sessions have ended (or refilled)
			}
			time.Sleep(2 * time.Second)
			_, socks := unitsOf(v)
			r := storm(b, socks)
			t.Logf("storm %s round %d: %d answered, slowest %v, median %v, systemd %v", v.prefix, round, r.answered,
				r.replies.Max(), r.replies.Median(), r.systemd)
			if r.answered != n {
				out, _ := b.Systemctl(ctx, "list-units", "--failed", "--no-pager")
				t.Fatalf("%s, round %d: %d of %d answered; first failure: %v\n%s", v.name, round, r.answered, n, r.firstFail, out)
			}
			results[i] = append(results[i], r)
		}
	}
	for _, v := range variants {
		ready(v)
	}
	failed, _ := b.Systemctl(ctx, "list-units", "--failed", "--no-legend", "--plain", "--no-pager")
	manager := func(prop string) string {
		out, _ := b.Systemctl(ctx, "show", "-p", prop, "--value")
		return strings.TrimSpace(out)
	}
	tasksMax, nofile := manager("DefaultTasksMax"), manager("DefaultLimitNOFILE")
	unitTasks := show(ctx, b, "virtiofsd@st0.service", "TasksMax")

	s.printf("%d instances of each variant in one private systemd (C virtiofsd, Debian 12 leg, CACHE=auto, one shared\n"+
		"folder); a client per instance (vhostuser.Probe: connect, GET_FEATURES, wait for the reply), %d clients\n"+
		"released at the same moment, like VMs booting together. Before each storm every variant's services are\n"+
		"inactive (standby: every virtiofsd waits, ready) and the box rests 2 s. \"Systemd CPU\" is the box's PID 1\n"+
		"utime+stime (/proc/PID/stat, 10 ms ticks) from the release to the last reply; \"the whole box's CPU\" is every\n"+
		"process in the box over the same interval (its cgroup's cpu.stat): systemd, journald, the shims, virtiofsd,\n"+
		"and \"box CPU / wall\" how many of the machine's %d CPUs that kept busy. %d storms per variant,\n"+
		"the variants interleaved, the order rotated each round; each figure is the median over the storms.\n\n", n, n, runtime.NumCPU(), *stormRounds)
	s.printf("| variant | slowest first reply | median first reply | systemd CPU | systemd CPU per instance | the whole box's CPU per instance | box CPU / wall | slowest / bare |\n|---|---|---|---|---|---|---|---|\n")
	med := func(rs []stormResult, f func(stormResult) time.Duration) time.Duration {
		var x Sample
		for _, r := range rs {
			x = append(x, f(r))
		}
		return x.Median()
	}
	slowest := func(r stormResult) time.Duration { return r.replies.Max() }
	bare := med(results[0], slowest)
	ratio := map[string]float64{}
	for i, v := range variants {
		rs := results[i]
		sl := med(rs, slowest)
		sys := med(rs, func(r stormResult) time.Duration { return r.systemd })
		box := med(rs, func(r stormResult) time.Duration { return r.box })
		wall := med(rs, func(r stormResult) time.Duration { return r.wall })
		ratio[v.prefix] = float64(sl) / float64(bare)
		s.printf("| %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n", v.name, ms(sl), ms(med(rs, func(r stormResult) time.Duration { return r.replies.Median() })),
			ms(sys), ms(sys/time.Duration(n)), ms(box/time.Duration(n)), float64(box)/float64(wall), ratio[v.prefix])
	}
	s.printf("\nEach storm (slowest / median / systemd CPU):\n\n| variant | storms |\n|---|---|\n")
	for i, v := range variants {
		var parts []string
		for _, r := range results[i] {
			parts = append(parts, fmt.Sprintf("%s / %s / %s", ms(r.replies.Max()), ms(r.replies.Median()), ms(r.systemd)))
			t.Logf("%s: box CPU %v over %v", v.prefix, r.box, r.wall)
		}
		s.printf("| %s | %s |\n", v.name, strings.Join(parts, "; "))
	}
	s.printf("\nGoals: shipped slowest <= 2.0 x bare: %.2f (%s); standby slowest <= 0.5 x bare: %.2f (%s).\n",
		ratio["st"], goal(ratio["st"] <= 2.0), ratio["ss"], goal(ratio["ss"] <= 0.5))
	s.printf("\nLimits: the box's DefaultTasksMax=%s (a unit's TasksMax=%s), DefaultLimitNOFILE=%s; every socket got one\n"+
		"connection per storm (TriggerLimitBurst=60 per 10 s) and every service one start (StartLimitBurst=30); failed\n"+
		"units after the storms: %d.\n", tasksMax, unitTasks, nofile, len(strings.Fields(failed)))
	s.measuredBy("storm", "storm_test.go")
}
