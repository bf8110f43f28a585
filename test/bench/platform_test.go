package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// debian13Samples per variant of the Debian 13 leg's activation figure.
// The front's cost is judged by a difference of medians whose spread at
// 30 samples is several ms (the report gives its interval); 300 narrow it
// enough to judge a 1 ms goal.
var debian13Samples = flag.Int("debian13-samples", 30, "cold samples per variant of the Debian 13 leg's activation figure (300 to judge the front's 1 ms goal)")

// bareRustUnits are bareUnits with the Rust virtiofsd of the Debian 13 leg
// in place of the C one: the same socket settings and start limits.
func bareRustUnits(t *testing.T, share string) map[string]string {
	units := bareUnits(share)
	c := "ExecStart=" + virtiofsd.CVirtiofsd + " --fd=3 -o source=" + share + " -o cache=auto"
	if !strings.Contains(units["bare@.service"], c) {
		t.Fatalf("bareUnits no longer runs %q: update bareRustUnits", c)
	}
	units["bare@.service"] = strings.Replace(units["bare@.service"], c,
		"ExecStart="+virtiofsd.RustVirtiofsd+" --fd=3 --shared-dir="+share+" --cache=auto", 1)
	return units
}

// reportDebian13 measures the Debian 13 leg (systemd 257, the Rust
// virtiofsd 1.13, the shim installed from its .deb by apt) in one box:
// cold activation of a bare Rust virtiofsd unit pair beside the shim's
// units, then the memory of live sessions.
func reportDebian13(t *testing.T, s *section) {
	s.title = "Debian 13 leg: activation and memory"
	ctx := context.Background()
	dir := benchDir(t)
	bareShare := filepath.Join(dir, "bare")
	if err := os.Mkdir(bareShare, 0o755); err != nil {
		t.Fatal(err)
	}
	b := shimbox.New(t, shimbox.Options{Name: "bench-debian13", Platform: shimbox.Debian13, ExtraUnits: bareRustUnits(t, bareShare)})
	if _, err := b.AddInstance("act"); err != nil {
		t.Fatal(err)
	}
	// The shim's instance runs the front (FRONT=auto, the default, on with
	// the Rust virtiofsd); this one does not: the front's cost at a cold
	// start (issue 24: the first reply grows by at most 1 ms).
	if _, err := b.AddInstance("actnf", "FRONT=no"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@act.socket", "virtiofsd@actnf.socket", "bare@act.socket"); err != nil {
		t.Fatal(err, out)
	}
	versions := func(argv ...string) string {
		out, _ := b.Run(ctx, argv[0], argv[1:]...)
		return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	s.printf("One private systemd booted from the Debian 13 tree (%s), the shim installed from its .deb\n"+
		"by apt-get inside it, which brought %s. Cold activation as in \"Activation latency\" (quiet mode,\n"+
		"%d samples per variant, interleaved, order rotated): connect until the first vhost-user reply. The\n"+
		"bare unit pair runs `%s --fd=3 --shared-dir=DIR --cache=auto` directly.\n\n",
		versions("systemctl", "--version"), versions(virtiofsd.RustVirtiofsd, "--version"),
		*debian13Samples, virtiofsd.RustVirtiofsd)
	vs := []coldTarget{
		{name: "bare Rust virtiofsd (bare@.socket + bare@.service)", unit: "bare@act.service", sock: b.Path("/run/bare/act.sock")},
		{name: "shim (virtiofsd@.socket + virtiofsd@.service), config SHARED_DIR only", unit: "virtiofsd@act.service", sock: b.Socket("act")},
		{name: "shim, FRONT=no (the front off)", unit: "virtiofsd@actnf.service", sock: b.Socket("actnf")},
	}
	samples := coldRounds(t, ctx, b, vs, *debian13Samples, quiet(activationSettle))
	latencyTable(s, vs, samples)
	on, off := samples[1].Median(), samples[2].Median()
	lo, hi := MedianDiffInterval(samples[1], samples[2])
	s.printf("\nThe front's cost at a cold start (issue 24): with the default FRONT=auto the shim accepts the VM's\n"+
		"connection at once and relays GET_FEATURES into virtiofsd's private socket, where it waits for virtiofsd;\n"+
		"with FRONT=no virtiofsd gets the socket and answers itself. Median with the front less without: %s (goal <= 1 ms: %s; 90%% bootstrap interval %s to %s;\n"+
		"p25 %s, p75 %s).\n",
		signedMs(on-off), goal(on-off <= time.Millisecond), signedMs(lo), signedMs(hi),
		signedMs(samples[1].Quantile(0.25)-samples[2].Quantile(0.25)), signedMs(samples[1].Quantile(0.75)-samples[2].Quantile(0.75)))
	for i, v := range vs {
		t.Logf("debian13, %s: %v", v.unit, samples[i].Sorted())
	}

	r := measureMemory(t, ctx, b, "m")
	per := func(kb int64) string { return fmt.Sprintf("%.2f MiB", float64(kb)/1024/float64(memoryInstances)) }
	s.printf("\nMemory, as in \"Memory\": %d live instances, each serving a connected client, after 2 s of rest;\n"+
		"PSS and RSS per instance from /proc/PID/smaps_rollup.\n\n", memoryInstances)
	s.printf("| per instance | PSS | PSS anon | PSS file | RSS |\n|---|---|---|---|---|\n")
	s.printf("| virtiofsd-shim, as shipped | %s | %s | %s | %s |\n", per(r.shim.Pss), per(r.shim.PssAnon), per(r.shim.PssFile), per(r.shim.Rss))
	s.printf("| Rust virtiofsd (%d processes for %d instances) | %s | %s | %s | %s |\n", r.vfsN, memoryInstances,
		per(r.vfs.Pss), per(r.vfs.PssAnon), per(r.vfs.PssFile), per(r.vfs.Rss))
	s.measuredBy("debian13", "platform_test.go")
}

// signedMs formats a difference of durations in milliseconds, with its sign.
func signedMs(d time.Duration) string { return fmt.Sprintf("%+.2f ms", float64(d.Microseconds())/1000) }
