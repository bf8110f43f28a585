// Package logsink is where lines go: virtiofsd's lines to the systemd journal
// with fields (or to stderr off systemd), without ever making virtiofsd wait.
package logsink

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// Journal fields of the interface contract (docs/operations.md, "The journal").
const (
	FieldIdentifier = "SYSLOG_IDENTIFIER"
	FieldInstance   = "VIRTIOFSD_INSTANCE"
	FieldPID        = "VIRTIOFSD_PID"
	FieldDropped    = "VIRTIOFSD_DROPPED"
	FieldSuppressed = "VIRTIOFSD_SUPPRESSED"
	FieldSession    = "VIRTIOFSD_SESSION"
	Identifier      = "virtiofsd"
)

// Record is one line to store.
type Record struct {
	Message  string
	Priority journal.Priority
	PID      int    // virtiofsd's pid
	Session  string // VIRTIOFSD_SESSION, "" for none
	fields   map[string]string
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
	return journal.Send(r.Message, r.Priority, vars)
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

// DefaultBuffer is how many lines Forwarder holds while its sink is slow,
// when no rate limit sets a larger bound.
const DefaultBuffer = 8192

// Pacing: while lines arrive faster than the sink takes them (more than
// paceBacklog queued, the last one offered less than paceQuiet ago), the
// forwarder holds them, so that journald's work comes after virtiofsd's
// burst instead of taking a CPU from it. It never holds longer than paceMax
// in a row; then it sends paceBatch lines before holding again. paceQuiet
// is longer than the pauses of the supervisor's reader during a flood
// (launch's readPause, 2 ms), which are no end of the flood.
const (
	paceBacklog = 64
	paceQuiet   = 10 * time.Millisecond
	paceMax     = time.Second
	paceBatch   = 256
)

// Limits bound a Forwarder. The zero value is DefaultBuffer lines and no
// rate limit.
type Limits struct {
	// Queue is how many lines may wait for the sink; 0 means DefaultBuffer,
	// or Burst plus a margin when that is larger.
	Queue int
	// Interval and Burst are journald's rate limit (RateLimitIntervalSec=,
	// RateLimitBurst= as journald applies it, see JournaldLimits): at most
	// Burst lines per Interval and priority pool are sent; journald would
	// discard the rest. They are counted instead, and reported the way
	// journald reports them ("Suppressed N messages"). Interval 0: no limit.
	Interval time.Duration
	Burst    int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// burstMargin is sent beyond Burst: the shim's own entries count in the same
// journald pools, and this many lines more make sure the journal keeps no
// fewer of virtiofsd's lines than it would from a bare unit.
const burstMargin = 64

// journaldPools is journald's priority_map (journald-rate-limit.c): one
// budget for emerg..crit, err, warning, notice and info, debug.
var journaldPools = [8]int{0, 0, 0, 1, 2, 3, 3, 4}

// Forwarder moves records to a Sink from its own goroutine. Offer never
// blocks: when the queue is full the record is dropped and counted; when
// journald's rate limit would discard it, it is not sent but counted. Each
// count is said once, exactly, in the journal: drops when the backlog is
// gone (a warning with VIRTIOFSD_DROPPED=N), suppressed lines when the next
// interval begins or at the end ("Suppressed N messages", with
// VIRTIOFSD_SUPPRESSED=N).
type Forwarder struct {
	sink    Sink
	lim     Limits
	now     func() time.Time
	wake    chan struct{}
	done    chan struct{}
	onError func(error)

	mu        sync.Mutex
	q         []Record
	head      int
	closed    bool
	lastOffer time.Time
	lastPID   int
	dropped   uint64 // not yet reported
	total     uint64 // dropped over the whole run
	forwarded uint64
	// The rate limit's current interval.
	start         time.Time
	pools         [5]int
	suppressed    uint64 // in the current interval, not yet reported
	suppressedAll uint64
}

// NewForwarder starts forwarding to sink within lim. onError, when set,
// learns of the first sink error of each kind; forwarding goes on.
func NewForwarder(sink Sink, lim Limits, onError func(error)) *Forwarder {
	if lim.Queue <= 0 {
		lim.Queue = DefaultBuffer
		if lim.Interval > 0 && lim.Burst+burstMargin > lim.Queue {
			lim.Queue = lim.Burst + burstMargin
		}
	}
	now := lim.Now
	if now == nil {
		now = time.Now
	}
	f := &Forwarder{sink: sink, lim: lim, now: now, wake: make(chan struct{}, 1), done: make(chan struct{}), onError: onError}
	go f.loop()
	return f
}

// Offer queues r without blocking; it reports false when r was dropped or
// suppressed. It copies r.Message when it keeps it: the caller may reuse the
// memory under it once Offer returns.
func (f *Forwarder) Offer(r Record) bool {
	f.mu.Lock()
	now := f.now()
	f.lastOffer = now
	f.lastPID = r.PID
	pool := -1
	if f.lim.Interval > 0 {
		if f.start.IsZero() || now.Sub(f.start) >= f.lim.Interval {
			f.noteSuppressedLocked()
			f.start, f.pools = now, [5]int{}
		}
		pool = journaldPools[r.Priority&7]
		if f.pools[pool] >= f.lim.Burst+burstMargin {
			f.suppressed++
			f.suppressedAll++
			f.mu.Unlock()
			return false
		}
	}
	if len(f.q)-f.head >= f.lim.Queue {
		f.dropped++
		f.total++
		f.mu.Unlock()
		return false
	}
	if pool >= 0 {
		f.pools[pool]++
	}
	r.Message = strings.Clone(r.Message) // the caller's buffer is reused
	f.q = append(f.q, r)
	f.mu.Unlock()
	f.signal()
	return true
}

func (f *Forwarder) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// noteSuppressedLocked queues journald's wording for the lines the rate
// limit held back in the interval that ends, if any.
func (f *Forwarder) noteSuppressedLocked() {
	if f.suppressed == 0 {
		return
	}
	n := f.suppressed
	f.suppressed = 0
	f.q = append(f.q, Record{
		Message:  fmt.Sprintf("Suppressed %d messages from virtiofsd (the journal's rate limit, applied by virtiofsd-shim)", n),
		Priority: journal.PriWarning, PID: f.lastPID,
		fields: map[string]string{FieldSuppressed: strconv.FormatUint(n, 10)},
	})
}

// next waits for the next record to send; ok is false once closed and empty.
func (f *Forwarder) next(held *time.Duration, batch *int) (r Record, ok bool) {
	for {
		f.mu.Lock()
		n := len(f.q) - f.head
		if n == 0 {
			if f.q != nil && cap(f.q) > DefaultBuffer {
				f.q = nil // a flood's backlog: let the GC have it
			}
			f.q, f.head = f.q[:0], 0
			if f.dropped > 0 {
				f.mu.Unlock()
				f.reportDrops()
				continue
			}
			if f.closed {
				f.mu.Unlock()
				return Record{}, false
			}
			f.mu.Unlock()
			<-f.wake
			continue
		}
		if !f.closed && n > paceBacklog && *batch == 0 && f.now().Sub(f.lastOffer) < paceQuiet && *held < paceMax {
			f.mu.Unlock()
			time.Sleep(paceQuiet / 4)
			*held += paceQuiet / 4
			continue
		}
		if *held >= paceMax {
			*batch = paceBatch
		}
		*held = 0
		if *batch > 0 {
			*batch--
		}
		r = f.q[f.head]
		f.q[f.head] = Record{}
		f.head++
		f.mu.Unlock()
		return r, true
	}
}

func (f *Forwarder) loop() {
	defer close(f.done)
	var lastErr string
	var held time.Duration
	var batch int
	for {
		r, ok := f.next(&held, &batch)
		if !ok {
			return
		}
		if err := f.sink.Write(r, r.fields); err != nil {
			if f.onError != nil && err.Error() != lastErr {
				f.onError(err)
			}
			lastErr = err.Error()
			continue
		}
		if r.fields == nil {
			f.mu.Lock()
			f.forwarded++
			f.mu.Unlock()
		}
	}
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
	_ = f.sink.Write(Record{Message: msg, Priority: journal.PriWarning, PID: pid},
		map[string]string{FieldDropped: strconv.FormatUint(n, 10)})
}

// Close forwards what is queued, says what was dropped or suppressed, stops,
// and returns how many lines were forwarded, dropped and suppressed in all.
// Offer must not be called after Close.
func (f *Forwarder) Close() (forwarded, dropped, suppressed uint64) {
	f.mu.Lock()
	f.noteSuppressedLocked()
	f.closed = true
	f.mu.Unlock()
	f.signal()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forwarded, f.total, f.suppressedAll
}
