package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/launch"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/peer"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/shimbox"
)

// debian13Samples per variant of the Debian 13 leg's activation figure.
const debian13Samples = 30

// bareRustUnits are bareUnits with the Rust virtiofsd of the Debian 13 leg
// in place of the C one: the same socket settings and start limits.
func bareRustUnits(t *testing.T, share string) map[string]string {
	units := bareUnits(share)
	c := "ExecStart=" + launch.CVirtiofsd + " --fd=3 -o source=" + share + " -o cache=auto"
	if !strings.Contains(units["bare@.service"], c) {
		t.Fatalf("bareUnits no longer runs %q: update bareRustUnits", c)
	}
	units["bare@.service"] = strings.Replace(units["bare@.service"], c,
		"ExecStart="+launch.RustVirtiofsd+" --fd=3 --shared-dir="+share+" --cache=auto", 1)
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
	if out, err := b.Systemctl(ctx, "enable", "--now", "virtiofsd@act.socket", "bare@act.socket"); err != nil {
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
		versions("systemctl", "--version"), versions(launch.RustVirtiofsd, "--version"),
		debian13Samples, launch.RustVirtiofsd)
	type variant struct{ name, unit, sock string }
	vs := []variant{
		{name: "bare Rust virtiofsd (bare@.socket + bare@.service)", unit: "bare@act.service", sock: b.Path("/run/bare/act.sock")},
		{name: "shim (virtiofsd@.socket + virtiofsd@.service), config SHARED_DIR only", unit: "virtiofsd@act.service", sock: b.Socket("act")},
	}
	samples := make([]Sample, len(vs))
	for round := 0; round < debian13Samples; round++ {
		for k := range vs {
			i := (round + k) % len(vs)
			for _, w := range vs {
				if err := waitInactive(ctx, b, w.unit, 15*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(activationSettle)
			start := time.Now()
			c, err := peer.Probe(vs[i].sock, 15*time.Second)
			d := time.Since(start)
			if err != nil {
				out, _ := b.Systemctl(ctx, "status", "--no-pager", "-n", "30", vs[i].unit)
				t.Fatalf("%s, sample %d: %v\n%s", vs[i].name, round, err, out)
			}
			c.Close()
			samples[i] = append(samples[i], d)
		}
	}
	for _, v := range vs {
		if err := waitInactive(ctx, b, v.unit, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	bare := samples[0].Median()
	s.printf("| variant | samples | min | p25 | median | p75 | max | median / bare |\n|---|---|---|---|---|---|---|---|\n")
	for i, v := range vs {
		x := samples[i]
		s.printf("| %s | %d | %s | %s | %s | %s | %s | %.2f |\n", v.name, len(x), ms(x.Min()), ms(x.Quantile(0.25)),
			ms(x.Median()), ms(x.Quantile(0.75)), ms(x.Max()), float64(x.Median())/float64(bare))
		t.Logf("debian13, %s: %v", v.unit, x.Sorted())
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
