// Package journal is where lines go: virtiofsd's lines to the systemd journal
// with fields (or to stderr off systemd), without ever making virtiofsd wait.
package journal

import (
	"fmt"
	"io"
	"strconv"
	"sync"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
)

// Journal fields of the interface contract (DESIGN.md).
const (
	FieldIdentifier = "SYSLOG_IDENTIFIER"
	FieldInstance   = "VIRTIOFSD_INSTANCE"
	FieldPID        = "VIRTIOFSD_PID"
	FieldDropped    = "VIRTIOFSD_DROPPED"
	FieldSession    = "VIRTIOFSD_SESSION"
	Identifier      = "virtiofsd"
)

// Record is one line to store.
type Record struct {
	Message  string
	Priority sdjournal.Priority
	PID      int    // virtiofsd's pid
	Session  string // VIRTIOFSD_SESSION, "" for none
}

// Sink stores records; it may block.
type Sink interface {
	Write(r Record, fields map[string]string) error
}

// Origin ties an entry to its instance; every entry the shim sends, its
// own and virtiofsd's, carries it.
type Origin struct {
	Instance string // VIRTIOFSD_INSTANCE
	Unit     string // the shim's unit, FieldUnit (see SelfUnit); "" for none
	UserUnit string // a user instance's unit, FieldUserUnit (see SelfUserUnit); "" for none
	Session  string // VIRTIOFSD_SESSION: the session the entry belongs to; "" for none
}

// addTo sets the origin's fields in vars, leaving out the empty ones.
func (o Origin) addTo(vars map[string]string) {
	if o.Instance != "" {
		vars[FieldInstance] = o.Instance
	}
	if o.Unit != "" {
		vars[FieldUnit] = o.Unit
	}
	if o.UserUnit != "" {
		vars[FieldUserUnit] = o.UserUnit
	}
	if o.Session != "" {
		vars[FieldSession] = o.Session
	}
}

// JournalSink writes to journald's native protocol through go-systemd.
type JournalSink struct {
	Origin
}

// Write sends r with SYSLOG_IDENTIFIER=virtiofsd, VIRTIOFSD_PID and the
// origin's fields, plus the extra fields.
func (s JournalSink) Write(r Record, extra map[string]string) error {
	vars := map[string]string{
		FieldIdentifier: Identifier,
		FieldPID:        strconv.Itoa(r.PID),
	}
	s.addTo(vars)
	if r.Session != "" {
		vars[FieldSession] = r.Session
	}
	for k, v := range extra {
		vars[k] = v
	}
	return sdjournal.Send(r.Message, r.Priority, vars)
}

// TextSink writes "virtiofsd[PID]: message" lines, for running off systemd.
type TextSink struct {
	W io.Writer
}

// Write prints one line.
func (s TextSink) Write(r Record, extra map[string]string) error {
	_, err := fmt.Fprintf(s.W, "%s[%d]: %s\n", Identifier, r.PID, r.Message)
	return err
}

// DefaultBuffer is how many lines Forwarder holds while its sink is slow.
const DefaultBuffer = 8192

// Forwarder moves records to a Sink from its own goroutine. Offer never
// blocks: when the buffer is full the record is dropped and counted, and a
// warning with the count is written once the sink catches up.
type Forwarder struct {
	sink    Sink
	ch      chan Record
	done    chan struct{}
	onError func(error)

	mu        sync.Mutex
	dropped   uint64 // not yet reported
	total     uint64 // dropped over the whole run
	forwarded uint64
	lastPID   int
}

// NewForwarder starts forwarding to sink with room for size lines (0 means
// DefaultBuffer). onError, when set, learns of the first sink error of each
// kind; forwarding goes on.
func NewForwarder(sink Sink, size int, onError func(error)) *Forwarder {
	if size <= 0 {
		size = DefaultBuffer
	}
	f := &Forwarder{sink: sink, ch: make(chan Record, size), done: make(chan struct{}), onError: onError}
	go f.loop()
	return f
}

// Offer queues r without blocking; it reports false when r was dropped.
func (f *Forwarder) Offer(r Record) bool {
	select {
	case f.ch <- r:
		return true
	default:
		f.mu.Lock()
		f.dropped++
		f.total++
		f.lastPID = r.PID
		f.mu.Unlock()
		return false
	}
}

func (f *Forwarder) loop() {
	defer close(f.done)
	var lastErr string
	for r := range f.ch {
		f.reportDrops()
		if err := f.sink.Write(r, nil); err != nil {
			if f.onError != nil && err.Error() != lastErr {
				f.onError(err)
			}
			lastErr = err.Error()
			continue
		}
		f.mu.Lock()
		f.forwarded++
		f.mu.Unlock()
	}
	f.reportDrops()
}

func (f *Forwarder) reportDrops() {
	f.mu.Lock()
	n, pid := f.dropped, f.lastPID
	f.dropped = 0
	f.mu.Unlock()
	if n == 0 {
		return
	}
	msg := fmt.Sprintf("virtiofsd-shim dropped %d line(s) of virtiofsd output: the journal did not keep up", n)
	_ = f.sink.Write(Record{Message: msg, Priority: sdjournal.PriWarning, PID: pid},
		map[string]string{FieldDropped: strconv.FormatUint(n, 10)})
}

// Close forwards what is queued, stops, and returns how many lines were
// forwarded and dropped in all. Offer must not be called after Close.
func (f *Forwarder) Close() (forwarded, dropped uint64) {
	close(f.ch)
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forwarded, f.total
}
