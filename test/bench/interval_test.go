package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestMedianDiffIntervalHoldsTheTrueShift: two samples of one spread, the
// second shifted by 5 ms, give an interval around -5 ms that excludes 0;
// a sample against itself gives one around 0.
func TestMedianDiffIntervalHoldsTheTrueShift(t *testing.T) {
	var a, b Sample
	for i := range 300 {
		d := time.Duration(40+(i*37)%30) * time.Millisecond // 40 to 69 ms, evenly
		a = append(a, d)
		b = append(b, d+5*time.Millisecond)
	}
	lo, hi := MedianDiffInterval(a, b)
	assert.True(t, lo <= -5*time.Millisecond && -5*time.Millisecond <= hi, "[%v, %v]", lo, hi)
	assert.Less(t, hi, time.Duration(0))
	lo, hi = MedianDiffInterval(a, a)
	assert.True(t, lo <= 0 && 0 <= hi, "[%v, %v]", lo, hi)
}
