// Package bench measures virtiofsd-shim against the bare virtiofsd, side by
// side in one run.
//
// It holds benchmarks only. In-process pieces are Go benchmarks
// (benchstat-friendly):
//
//	go test -run '^$' -bench . -count 6 ./test/bench/ | tee new.txt
//
// The system measurements (activation, memory, log flood, scale, in private
// systemd boxes, as root) and the report docs/benchmarks.md come from
// TestReport, which runs only when given -report:
//
//	go test -run '^TestReport$' -timeout 600m ./test/bench/ -args -report ../../docs/benchmarks.md
package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Sample is a set of durations measured the same way.
type Sample []time.Duration

// Sorted returns a sorted copy.
func (s Sample) Sorted() Sample {
	c := append(Sample(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

// Quantile returns the q-quantile (0 < q <= 1) by the nearest-rank method;
// Quantile(0.5) is the median (the lower one for an even count).
func (s Sample) Quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s.Sorted()
	i := int(math.Ceil(q*float64(len(c)))) - 1
	if i < 0 {
		i = 0
	}
	return c[i]
}

// Median is Quantile(0.5).
func (s Sample) Median() time.Duration { return s.Quantile(0.5) }

// Min and Max of the sample.
func (s Sample) Min() time.Duration { return s.Quantile(0) }

// Max is the largest value.
func (s Sample) Max() time.Duration { return s.Quantile(1) }

// MedianDiffInterval is a 90% bootstrap interval of a's median less b's
// (2,000 resamples of each, a fixed seed): how far the difference of two
// medians of this many samples can be trusted.
func MedianDiffInterval(a, b Sample) (lo, hi time.Duration) {
	if len(a) == 0 || len(b) == 0 {
		return 0, 0
	}
	r := rand.New(rand.NewPCG(1, 2))
	const n = 2000
	diffs := make(Sample, n)
	ra, rb := make(Sample, len(a)), make(Sample, len(b))
	for i := range diffs {
		for j := range ra {
			ra[j] = a[r.IntN(len(a))]
		}
		for j := range rb {
			rb[j] = b[r.IntN(len(b))]
		}
		diffs[i] = ra.Median() - rb.Median()
	}
	return diffs.Quantile(0.05), diffs.Quantile(0.95)
}
