package guestload

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Files of a Check run, in its folder.
const (
	// CheckUp is written once the run holds its files open: a host may
	// start its handovers then.
	CheckUp = "up"
	// CheckHeld is written and then held open for reading; each round
	// reads it again through that descriptor.
	CheckHeld = "held"
	// CheckAppend is held open for appending; each round appends one line
	// ("round N") and reads the whole file back by its path.
	CheckAppend = "append"
	// checkDeleted is opened, then unlinked (CheckParams.Deleted); each
	// round reads it through the descriptor.
	checkDeleted = "deleted"
)

// CheckParams are the sizes and the bounds of a Check run.
type CheckParams struct {
	Label string // names the run in its records (the share's tag, say)
	// Stop is the path whose appearance ends the run (the host's stop
	// file, in the share); checked before each round.
	Stop string
	// Limit bounds the run: once it has passed without Stop, the run
	// ends with an error.
	Limit time.Duration
	// Pause is the idle time between rounds.
	Pause time.Duration
	// Keep is how many checked files stay in the folder; older ones are
	// removed.
	Keep int
	// Deleted holds a file opened and then deleted (file-handles mode:
	// find-paths cannot carry one across a handover).
	Deleted bool
	// DropCaches drops the guest's caches before reading back (root), so
	// that the reads reach virtiofsd.
	DropCaches bool
}

// CheckRecord is one line of a Check run's output: an "error" (one per
// failed operation) or the "summary" at its end.
type CheckRecord struct {
	Event string `json:"check"` // "error" or "summary"
	Label string `json:"label"`
	// Set on error lines.
	Round int    `json:"round,omitempty"`
	Op    string `json:"op,omitempty"`
	Error string `json:"error,omitempty"`
	// Set on the summary line.
	Rounds     int    `json:"rounds,omitempty"`
	Ops        int    `json:"ops,omitempty"`
	Errors     int    `json:"errors"`
	MaxNS      int64  `json:"max_ns,omitempty"` // the slowest single operation
	MaxOp      string `json:"max_op,omitempty"` // and which it was
	Stopped    bool   `json:"stopped"`          // the stop file ended the run (not Limit)
	AppendSize int64  `json:"append_size,omitempty"`
}

// MaxLatency is the summary's slowest single operation.
func (r CheckRecord) MaxLatency() time.Duration { return time.Duration(r.MaxNS) }

// ParseCheck returns the Check records found in text (a serial console's
// output; other lines and carriage returns are skipped).
func ParseCheck(text string) []CheckRecord {
	var out []CheckRecord
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `{"check":`) {
			continue
		}
		var r CheckRecord
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// HeldContent is what the file name (CheckHeld, or the deleted one) holds
// in a Check run.
func HeldContent(name string) []byte {
	return bytes.Repeat([]byte("held open across handovers: "+name+"\n"), 64)
}

// Check runs rounds of operations that check their own data on dir until
// p.Stop appears (or p.Limit passes), and prints each failed operation and
// then one summary line to w, as JSON (CheckRecord). Each round:
//
//	write     a new file of random content, fsync'd, its sha256 kept
//	rename    it to its final name
//	readback  read it back (after dropping caches) and compare the sha256
//	readdir   list dir: exactly the files made and not yet removed
//	held      read CheckHeld again through the descriptor opened first
//	append    append "round N" to CheckAppend through the held descriptor
//	appended  read CheckAppend by its path: every round's line, in order
//	deleted   read the deleted file through its descriptor (p.Deleted)
//	unlink    remove the file made p.Keep rounds ago
//
// An operation that fails is reported and the round goes on. The error
// is nil when the run saw no failure.
func Check(w io.Writer, dir string, p CheckParams) error {
	if p.Stop == "" || p.Limit <= 0 || p.Keep < 1 || p.Pause < 0 {
		return fmt.Errorf("guestload check: a stop file, a limit > 0, keep >= 1 and a pause >= 0 are required: %+v", p)
	}
	c := &checker{w: w, label: p.Label, files: map[string][sha256.Size]byte{}}
	held, appendF, deleted, err := c.setup(dir, p.Deleted)
	if err != nil {
		return err
	}
	defer held.Close()
	defer appendF.Close()
	if deleted != nil {
		defer deleted.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, CheckUp), nil, 0o644); err != nil {
		return fmt.Errorf("guestload check: write %s: %w", CheckUp, err)
	}

	var appended []byte
	start := time.Now()
	stopped := false
	for c.round = 1; ; c.round++ {
		if _, err := os.Stat(p.Stop); err == nil {
			stopped = true
			break
		}
		if time.Since(start) > p.Limit {
			c.fail("stop", fmt.Errorf("%s did not appear within %s", p.Stop, p.Limit))
			break
		}
		name := fmt.Sprintf("data.%06d", c.round)
		path := filepath.Join(dir, name)
		tmp := path + ".tmp"
		var sum [sha256.Size]byte
		wrote := c.op("write", func() error {
			b := make([]byte, 4096+c.round%4096)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			sum = sha256.Sum256(b)
			return writeSync(tmp, b)
		})
		if wrote && c.op("rename", func() error { return os.Rename(tmp, path) }) {
			c.files[name] = sum
			if p.DropCaches {
				dropCaches()
			}
			c.op("readback", func() error { return sameSum(path, sum) })
		}
		c.op("readdir", func() error { return c.listed(dir) })
		c.op("held", func() error { return readAt(held, HeldContent(CheckHeld)) })
		line := []byte("round " + strconv.Itoa(c.round) + "\n")
		if c.op("append", func() error { _, err := appendF.Write(line); return err }) {
			appended = append(appended, line...)
		}
		c.op("appended", func() error {
			got, err := os.ReadFile(filepath.Join(dir, CheckAppend))
			if err == nil && !bytes.Equal(got, appended) {
				err = fmt.Errorf("%s holds %d bytes, want the %d appended (%d rounds)", CheckAppend, len(got), len(appended), c.round)
			}
			return err
		})
		if deleted != nil {
			c.op("deleted", func() error { return readAt(deleted, HeldContent(checkDeleted)) })
		}
		old := fmt.Sprintf("data.%06d", c.round-p.Keep)
		if _, ok := c.files[old]; ok {
			if c.op("unlink", func() error { return os.Remove(filepath.Join(dir, old)) }) {
				delete(c.files, old)
			}
		}
		time.Sleep(p.Pause)
	}
	rounds := c.round - 1
	err = c.emit(CheckRecord{Event: "summary", Label: p.Label, Rounds: rounds, Ops: c.ops, Errors: c.errors,
		MaxNS: int64(c.max), MaxOp: c.maxOp, Stopped: stopped, AppendSize: int64(len(appended))})
	if err == nil && c.errors > 0 {
		err = fmt.Errorf("guestload check: %d operation(s) of %d failed on %s", c.errors, c.ops, dir)
	}
	return err
}

// checker counts a Check run's operations and reports its failures.
type checker struct {
	w      io.Writer
	label  string
	round  int
	ops    int
	errors int
	max    time.Duration
	maxOp  string
	files  map[string][sha256.Size]byte // data files made and not removed
}

// op runs one timed operation, reports its failure, and says whether it
// succeeded.
func (c *checker) op(name string, f func() error) bool {
	start := time.Now()
	err := f()
	if d := time.Since(start); d > c.max {
		c.max, c.maxOp = d, name
	}
	c.ops++
	if err != nil {
		c.fail(name, err)
		return false
	}
	return true
}

func (c *checker) fail(op string, err error) {
	c.errors++
	_ = c.emit(CheckRecord{Event: "error", Label: c.label, Round: c.round, Op: op, Error: err.Error()})
}

// emit writes one record as a line, in one write.
func (c *checker) emit(r CheckRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.w.Write(append(b, '\n'))
	return err
}

// setup makes the folder's held files and opens them: CheckHeld for
// reading, CheckAppend (empty) for appending and, when deleted, a file
// opened and then unlinked.
func (c *checker) setup(dir string, deleted bool) (held, appendF, del *os.File, err error) {
	open := func(name string, flag int) (*os.File, error) {
		path := filepath.Join(dir, name)
		if err := writeSync(path, HeldContent(name)); err != nil {
			return nil, fmt.Errorf("guestload check: write %s: %w", path, err)
		}
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return nil, fmt.Errorf("guestload check: open %s: %w", path, err)
		}
		return f, nil
	}
	if held, err = open(CheckHeld, os.O_RDONLY); err != nil {
		return nil, nil, nil, err
	}
	ap := filepath.Join(dir, CheckAppend)
	if appendF, err = os.OpenFile(ap, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		held.Close()
		return nil, nil, nil, fmt.Errorf("guestload check: open %s: %w", ap, err)
	}
	if deleted {
		if del, err = open(checkDeleted, os.O_RDONLY); err == nil {
			err = os.Remove(filepath.Join(dir, checkDeleted))
		}
		if err != nil {
			held.Close()
			appendF.Close()
			return nil, nil, nil, fmt.Errorf("guestload check: the deleted file: %w", err)
		}
	}
	return held, appendF, del, nil
}

// listed checks that dir lists exactly the data files made and not yet
// removed (other names are the run's own files or the host's).
func (c *checker) listed(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	var got, want []string
	for _, n := range names {
		if strings.HasPrefix(n, "data.") {
			got = append(got, n)
		}
	}
	for n := range c.files {
		want = append(want, n)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		return fmt.Errorf("%s lists data files %v, want %v", dir, got, want)
	}
	return nil
}

// writeSync writes b to a new file at path and fsyncs it before closing.
func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sameSum reads path and compares its sha256 with want.
func sameSum(path string, want [sha256.Size]byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if sha256.Sum256(b) != want {
		return fmt.Errorf("%s (%d bytes) does not read back what was written: sha256 differs", path, len(b))
	}
	return nil
}

// readAt reads f from its start through the descriptor and compares it
// with want.
func readAt(f *os.File, want []byte) error {
	got := make([]byte, len(want)+1)
	n, err := f.ReadAt(got, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s through its held descriptor: %w", f.Name(), err)
	}
	if !bytes.Equal(got[:n], want) {
		return fmt.Errorf("%s reads %d bytes through its held descriptor, not the %d written", f.Name(), n, len(want))
	}
	return nil
}
