// Package linestamp splits what a program writes (a guest's console) into
// lines, each handed over with the time its last bytes arrived: the clock
// a test reads "the guest answered" from.
package linestamp

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// Writer is an io.Writer that calls fn, under its lock, once for each
// complete line (without its "\n" or "\r\n"), with the time of the Write
// that completed it.
type Writer struct {
	fn  func(line string, at time.Time)
	mu  sync.Mutex
	buf []byte
}

// New returns a Writer that hands each line to fn.
func New(fn func(line string, at time.Time)) *Writer { return &Writer{fn: fn} }

// Write splits p into lines; a partial line waits for the rest.
func (w *Writer) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		w.fn(line, now)
	}
	return len(p), nil
}
