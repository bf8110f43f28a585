package logsink

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a fake time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// withField returns the records carrying field, and their values.
func withField(g *gate, field string) (recs []Record, values []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, r := range g.got {
		if v, ok := g.fields[i][field]; ok {
			recs = append(recs, r)
			values = append(values, v)
		}
	}
	return recs, values
}

// TestFloodDropsAreCountedExactlyAndSaidOnce: a flood far larger than the
// queue, while the journal is stuck; once it takes lines again, one warning
// says exactly how many were dropped.
func TestFloodDropsAreCountedExactlyAndSaidOnce(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	f := NewForwarder(g, Limits{Queue: 100}, nil)
	refused := 0
	for i := 0; i < 10000; i++ {
		if !f.Offer(Record{Message: "flood line " + strconv.Itoa(i), Priority: journal.PriInfo, PID: 42}) {
			refused++
		}
	}
	close(g.release)
	forwarded, dropped, suppressed := f.Close()
	assert.Equal(t, uint64(refused), dropped)
	assert.Equal(t, uint64(10000-refused), forwarded)
	assert.Zero(t, suppressed)
	recs, values := withField(g, FieldDropped)
	require.Len(t, recs, 1, "one warning for one flood")
	assert.Equal(t, strconv.Itoa(refused), values[0])
	assert.Equal(t, journal.PriWarning, recs[0].Priority)
	assert.Contains(t, recs[0].Message, "dropped "+values[0]+" line(s)")
}

// TestLinesJournaldWouldDiscardAreNotSentButCounted: beyond the burst of an
// interval, lines of a priority pool are held back and counted; the next
// interval begins with journald's "Suppressed N messages", said once.
func TestLinesJournaldWouldDiscardAreNotSentButCounted(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	close(g.release)
	c := &clock{t: time.Unix(1000, 0)}
	const burst = 10
	f := NewForwarder(g, Limits{Interval: 30 * time.Second, Burst: burst, Now: c.now}, nil)
	accepted := 0
	for i := 0; i < burst+burstMargin+50; i++ {
		if f.Offer(Record{Message: "info line", Priority: journal.PriInfo, PID: 7}) {
			accepted++
		}
	}
	assert.Equal(t, burst+burstMargin, accepted)
	// Another pool (warnings) has a budget of its own, as in journald.
	assert.True(t, f.Offer(Record{Message: "a warning", Priority: journal.PriWarning, PID: 7}))
	c.add(31 * time.Second)
	assert.True(t, f.Offer(Record{Message: "next interval", Priority: journal.PriInfo, PID: 7}))
	forwarded, dropped, suppressed := f.Close()
	assert.Equal(t, uint64(50), suppressed)
	assert.Zero(t, dropped)
	assert.Equal(t, uint64(accepted+2), forwarded)
	recs, values := withField(g, FieldSuppressed)
	require.Len(t, recs, 1)
	assert.Equal(t, "50", values[0])
	assert.Equal(t, "Suppressed 50 messages from virtiofsd (the journal's rate limit, applied by virtiofsd-shim)", recs[0].Message)
	// Said before the first line of the next interval.
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.Equal(t, "next interval", g.got[len(g.got)-1].Message)
}

func TestBurstGrowsWithFreeSpaceAsJournaldScalesIt(t *testing.T) {
	assert.Equal(t, 10000, burstModulate(10000, 0))
	assert.Equal(t, 10000, burstModulate(10000, 1<<20))
	assert.Equal(t, 35000, burstModulate(10000, 1<<30)) // about 1 GiB free: x3.5, as measured
	assert.Equal(t, 40000, burstModulate(10000, 4<<30))
}

func TestJournaldLimitsReadJournaldConfAndDropIns(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, p), []byte(s), 0o644))
	}
	l := JournaldLimits(root)
	assert.Equal(t, 30*time.Second, l.Interval)
	assert.Equal(t, 10000, l.Burst, "defaults; no journal folder under root")

	write("etc/systemd/journald.conf", "[Journal]\n#RateLimitBurst=1\nRateLimitBurst=200\n")
	write("usr/lib/systemd/journald.conf.d/10-vendor.conf", "[Journal]\nRateLimitIntervalSec=1min 30s\n")
	l = JournaldLimits(root)
	assert.Equal(t, 90*time.Second, l.Interval)
	assert.Equal(t, 200, l.Burst)

	write("etc/systemd/journald.conf.d/10-vendor.conf", "[Journal]\nRateLimitIntervalSec=0\n")
	assert.Equal(t, Limits{}, JournaldLimits(root), "the rate limit turned off, as journald does")
}
