package logsink

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gate is a sink that holds every write until released.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	got     []Record
	fields  []map[string]string
	fail    error
}

func (g *gate) Write(r Record, f map[string]string) error {
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	g.got = append(g.got, r)
	g.fields = append(g.fields, f)
	return g.fail
}

func TestForwarderDropsWhenFullAndSaysHowMany(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	f := NewForwarder(g, Limits{Queue: 2}, nil)
	accepted := 0
	for i := 0; i < 10; i++ {
		if f.Offer(Record{Message: "line", PID: 42}) {
			accepted++
		}
	}
	// The loop holds one line in Write, two wait in the buffer: the rest
	// were dropped without blocking the caller.
	assert.LessOrEqual(t, accepted, 3)
	close(g.release)
	forwarded, dropped, _ := f.Close()
	assert.Equal(t, uint64(accepted), forwarded)
	assert.Equal(t, uint64(10-accepted), dropped)

	var warned bool
	for i, r := range g.got {
		if n := g.fields[i][FieldDropped]; n != "" {
			warned = true
			assert.Equal(t, journal.PriWarning, r.Priority)
			assert.Contains(t, r.Message, "dropped "+n+" line(s) of virtiofsd output")
			assert.Equal(t, 42, r.PID)
		}
	}
	assert.True(t, warned, "a warning names the count")
}

func TestForwarderReportsEachDistinctSinkErrorOnce(t *testing.T) {
	g := &gate{release: make(chan struct{}), fail: errors.New("journal gone")}
	close(g.release)
	var errs []error
	var mu sync.Mutex
	f := NewForwarder(g, Limits{}, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	for i := 0; i < 5; i++ {
		f.Offer(Record{Message: "x"})
	}
	forwarded, _, _ := f.Close()
	assert.Equal(t, uint64(0), forwarded)
	require.Len(t, errs, 1)
}

func TestTextSinkWritesLikeSyslog(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, TextSink{W: &b}.Write(Record{Message: "virtio_loop: Exit", PID: 7}, nil))
	assert.Equal(t, "virtiofsd[7]: virtio_loop: Exit\n", b.String())
}

func TestHookMapsLogrusToJournal(t *testing.T) {
	assert.Equal(t, "SHIM_VIRTIOFSD_PID", fieldName("virtiofsd_pid"))
	assert.Equal(t, "SHIM_READY_AFTER", fieldName("ready-after"))
	assert.Equal(t, journal.PriErr, priority(logrus.ErrorLevel))
	assert.Equal(t, journal.PriWarning, priority(logrus.WarnLevel))
	assert.Equal(t, journal.PriInfo, priority(logrus.InfoLevel))
	assert.Equal(t, journal.PriDebug, priority(logrus.TraceLevel))
}
