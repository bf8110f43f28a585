package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/vhostuser"
)

// coldTarget is one variant of a cold-start measurement: a service whose
// socket is listening, and the row name it gets.
type coldTarget struct {
	name, unit, sock string
}

// pause is what a cold sample waits for before it connects.
type pause struct {
	settle     time.Duration // rest once the units are inactive
	backToBack bool          // wait only for the unit measured, and no rest
}

// quiet waits until no unit measured runs (the one measured last may still
// be tearing down), then rests settle: a cold start on an idle system.
func quiet(settle time.Duration) pause { return pause{settle: settle} }

// backToBack only waits for the unit measured to be inactive: the previous
// session may still be tearing down, and the CPUs are not idle.
var backToBack = pause{backToBack: true}

// coldRounds measures each target rounds times, interleaved (the order
// rotated each round): connect until the first vhost-user reply, with the
// target's service inactive before. It returns one Sample per target, in
// order, and leaves every target inactive.
func coldRounds(t *testing.T, ctx context.Context, b *shimbox.Box, ts []coldTarget, rounds int, p pause) []Sample {
	t.Helper()
	wait := func(unit string) {
		if err := waitInactive(ctx, b, unit, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	samples := make([]Sample, len(ts))
	prev := ""
	for round := 0; round < rounds; round++ {
		for k := range ts {
			i := (round + k) % len(ts)
			// Every other target was inactive when it was last measured
			// here: the one measured last is all that may still run.
			if prev != "" && !p.backToBack {
				wait(prev)
			}
			wait(ts[i].unit)
			time.Sleep(p.settle)
			start := time.Now()
			c, err := vhostuser.Probe(ts[i].sock, 15*time.Second)
			d := time.Since(start)
			if err != nil {
				out, _ := b.Systemctl(ctx, "status", "--no-pager", "-n", "30", ts[i].unit, strings.Replace(ts[i].unit, ".service", ".socket", 1))
				t.Fatalf("%s, round %d: %v\n%s", ts[i].name, round, err, out)
			}
			c.Close()
			samples[i] = append(samples[i], d)
			prev = ts[i].unit
		}
	}
	for _, x := range ts {
		wait(x.unit)
	}
	return samples
}

// latencyTable prints one row per target, its samples' spread and its
// median against the first target's.
func latencyTable(s *section, ts []coldTarget, samples []Sample) {
	base := samples[0].Median()
	s.printf("| variant | samples | min | p25 | median | p75 | max | median / bare |\n|---|---|---|---|---|---|---|---|\n")
	for i, x := range ts {
		v := samples[i]
		s.printf("| %s | %d | %s | %s | %s | %s | %s | %.2f |\n", x.name, len(v), ms(v.Min()), ms(v.Quantile(0.25)),
			ms(v.Median()), ms(v.Quantile(0.75)), ms(v.Max()), float64(v.Median())/float64(base))
	}
}
