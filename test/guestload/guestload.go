package guestload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Groups are the operation groups, in the order Run runs them.
var Groups = []string{"create", "stat", "readdir", "unlink", "walk", "read-small", "stream-write", "stream-read"}

// MetadataGroups are the groups that do not stream, and StreamGroups the two
// that do.
var (
	MetadataGroups = Groups[:6]
	StreamGroups   = Groups[6:]
)

// smallSize is what read-small reads from each file (and Prepare writes).
const smallSize = 4096

// mib is the streaming groups' I/O size and unit.
const mib = 1 << 20

// Params are the workload's sizes. The zero value is not useful: see
// Default and Tiny.
type Params struct {
	Files       int           // files of create/stat/readdir/unlink and of read-small
	TreeEntries int           // entries (folders and files) under tree/ for walk
	StreamMiB   int           // size of the streaming file, MiB
	Pause       time.Duration // idle time after each begin and result line
	DropCaches  bool          // drop the guest's caches before each group (needs root)
}

// Default are the sizes of the data-path benchmark.
func Default() Params {
	return Params{Files: 2000, TreeEntries: 10000, StreamMiB: 256, Pause: 300 * time.Millisecond, DropCaches: true}
}

// Tiny are sizes for a functional run, in tests.
func Tiny() Params {
	return Params{Files: 20, TreeEntries: 50, StreamMiB: 2}
}

func (p Params) validate() error {
	if p.Files < 1 || p.TreeEntries < 1 || p.StreamMiB < 1 || p.Pause < 0 {
		return fmt.Errorf("guestload: sizes must be >= 1 and the pause >= 0: %+v", p)
	}
	return nil
}

// Record is one line of the workload's output.
type Record struct {
	Event string `json:"event"` // "begin" or "result"
	Share string `json:"share"` // the label given to Run (the share's cache mode, say)
	Group string `json:"group"`
	// The rest is set on result lines.
	N       int    `json:"n,omitempty"`    // operations done (files, entries, MiB)
	Unit    string `json:"unit,omitempty"` // what one operation is: "file", "entry", "MiB"
	NS      int64  `json:"ns,omitempty"`   // guest-visible time of the group
	Dropped bool   `json:"dropped,omitempty"`
	OK      bool   `json:"ok,omitempty"` // the group succeeded
	Error   string `json:"error,omitempty"`
	// Steps are the guest-visible time (ns) of each step of a group that
	// has steps: the shell workload (ShellSteps).
	Steps map[string]int64 `json:"steps,omitempty"`
}

// Duration is the record's guest-visible time.
func (r Record) Duration() time.Duration { return time.Duration(r.NS) }

// ParseRecords returns the workload's records found in text (a serial
// console's output: other lines, and carriage returns, are skipped).
func ParseRecords(text string) []Record {
	var out []Record
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, `{"event":`) {
			continue
		}
		var r Record
		if json.Unmarshal([]byte(line), &r) == nil && r.Group != "" {
			out = append(out, r)
		}
	}
	return out
}

// Results are the result records of text, by share and group
// ("auto/create").
func Results(recs []Record) map[string]Record {
	m := map[string]Record{}
	for _, r := range recs {
		if r.Event == "result" {
			m[r.Share+"/"+r.Group] = r
		}
	}
	return m
}

// Prepare makes what walk and read-small read, untimed: tree/ with
// p.TreeEntries entries (folders of up to 100 files) and small/ with
// p.Files files of 4 KiB. Each is made once: a done file beside it
// (tree.done, small.done) records its size, and a tree of another size is
// made again.
func Prepare(dir string, p Params) error {
	if err := p.validate(); err != nil {
		return err
	}
	build := func(name string, n int, make func(root string) error) error {
		done := filepath.Join(dir, name+".done")
		if b, err := os.ReadFile(done); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(n) {
			return nil
		}
		root := filepath.Join(dir, name)
		if err := os.RemoveAll(root); err != nil {
			return fmt.Errorf("prepare %s: %w", root, err)
		}
		if err := os.Mkdir(root, 0o755); err != nil {
			return fmt.Errorf("prepare %s: %w", root, err)
		}
		if err := make(root); err != nil {
			return fmt.Errorf("prepare %s: %w", root, err)
		}
		return os.WriteFile(done, []byte(strconv.Itoa(n)+"\n"), 0o644)
	}
	err := build("tree", p.TreeEntries, func(root string) error {
		made, sub := 0, ""
		for made < p.TreeEntries {
			if made%101 == 0 {
				sub = filepath.Join(root, fmt.Sprintf("d%04d", made/101))
				if err := os.Mkdir(sub, 0o755); err != nil {
					return err
				}
			} else if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d", made%101)), nil, 0o644); err != nil {
				return err
			}
			made++
		}
		return nil
	})
	if err != nil {
		return err
	}
	data := bytes.Repeat([]byte("guestload"), smallSize/9+1)[:smallSize]
	return build("small", p.Files, func(root string) error {
		for i := 0; i < p.Files; i++ {
			if err := os.WriteFile(filepath.Join(root, fileName(i)), data, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

func fileName(i int) string { return fmt.Sprintf("f%06d", i) }

// Run runs groups (nil: all of Groups) on dir, labelled share, and prints
// their records to w, one JSON line (one write) each. It runs Prepare first
// when walk or read-small is among the groups. A group that fails is
// reported (ok false, its error) and the next one runs; the error then
// names every group that failed.
func Run(w io.Writer, dir, share string, groups []string, p Params) error {
	if err := p.validate(); err != nil {
		return err
	}
	if groups == nil {
		groups = Groups
	}
	run := map[string]func() (int, string, error){}
	meta := filepath.Join(dir, "meta")
	stream := filepath.Join(dir, "stream.bin")
	forEach := func(f func(path string) error) (int, string, error) {
		for i := 0; i < p.Files; i++ {
			if err := f(filepath.Join(meta, fileName(i))); err != nil {
				return i, "file", err
			}
		}
		return p.Files, "file", nil
	}
	run["create"] = func() (int, string, error) {
		return forEach(func(path string) error {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		})
	}
	run["stat"] = func() (int, string, error) {
		return forEach(func(path string) error { _, err := os.Lstat(path); return err })
	}
	run["readdir"] = func() (int, string, error) {
		f, err := os.Open(meta)
		if err != nil {
			return 0, "entry", err
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err == nil && len(names) != p.Files {
			err = fmt.Errorf("%s lists %d entries, want %d", meta, len(names), p.Files)
		}
		return len(names), "entry", err
	}
	run["unlink"] = func() (int, string, error) { return forEach(os.Remove) }
	run["walk"] = func() (int, string, error) {
		root := filepath.Join(dir, "tree")
		n := 0
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path == root {
				return nil
			}
			if _, err := d.Info(); err != nil { // lstat, as find does
				return err
			}
			n++
			return nil
		})
		if err == nil && n != p.TreeEntries {
			err = fmt.Errorf("%s has %d entries, want %d", root, n, p.TreeEntries)
		}
		return n, "entry", err
	}
	run["read-small"] = func() (int, string, error) {
		buf := make([]byte, smallSize)
		for i := 0; i < p.Files; i++ {
			f, err := os.Open(filepath.Join(dir, "small", fileName(i)))
			if err != nil {
				return i, "file", err
			}
			_, err = io.ReadFull(f, buf)
			f.Close()
			if err != nil {
				return i, "file", fmt.Errorf("read %s: %w", f.Name(), err)
			}
		}
		return p.Files, "file", nil
	}
	run["stream-write"] = func() (int, string, error) {
		f, err := os.OpenFile(stream, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return 0, "MiB", err
		}
		buf := bytes.Repeat([]byte{0xa5}, mib)
		for i := 0; i < p.StreamMiB; i++ {
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return i, "MiB", err
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return p.StreamMiB, "MiB", err
		}
		return p.StreamMiB, "MiB", f.Close()
	}
	run["stream-read"] = func() (int, string, error) {
		f, err := os.Open(stream)
		if err != nil {
			return 0, "MiB", err
		}
		defer f.Close()
		buf := make([]byte, mib)
		var total int64
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return int(total / mib), "MiB", err
			}
		}
		if total != int64(p.StreamMiB)*mib {
			return int(total / mib), "MiB", fmt.Errorf("read %d bytes of %s, want %d", total, stream, int64(p.StreamMiB)*mib)
		}
		return p.StreamMiB, "MiB", nil
	}
	for _, g := range groups {
		if run[g] == nil {
			return fmt.Errorf("guestload: unknown group %q (known: %s)", g, strings.Join(Groups, ", "))
		}
	}

	// Untimed setup and teardown around the groups.
	for _, g := range groups {
		if g == "walk" || g == "read-small" {
			if err := Prepare(dir, p); err != nil {
				return err
			}
			break
		}
	}
	before := map[string]func() error{
		"create": func() error {
			if err := os.RemoveAll(meta); err != nil {
				return err
			}
			return os.Mkdir(meta, 0o755)
		},
	}
	after := map[string]func() error{
		"unlink":      func() error { return os.Remove(meta) },
		"stream-read": func() error { return os.Remove(stream) },
	}

	emit := func(r Record) error {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var failed []string
	for _, g := range groups {
		if f := before[g]; f != nil {
			if err := f(); err != nil {
				return fmt.Errorf("guestload: before %s: %w", g, err)
			}
		}
		dropped := false
		if p.DropCaches {
			// The guest sends virtiofsd what it forgets: let that pass
			// before the begin line.
			dropped = dropCaches()
			time.Sleep(p.Pause)
		}
		if err := emit(Record{Event: "begin", Share: share, Group: g}); err != nil {
			return err
		}
		time.Sleep(p.Pause)
		start := time.Now()
		n, unit, err := run[g]()
		r := Record{Event: "result", Share: share, Group: g, N: n, Unit: unit, NS: int64(time.Since(start)), Dropped: dropped, OK: err == nil}
		if err != nil {
			r.Error = err.Error()
			failed = append(failed, g)
		}
		if err := emit(r); err != nil {
			return err
		}
		time.Sleep(p.Pause)
		if f := after[g]; f != nil && err == nil {
			if err := f(); err != nil {
				return fmt.Errorf("guestload: after %s: %w", g, err)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("guestload: %d group(s) failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// dropCaches writes back dirty pages and drops the page, dentry and inode
// caches; it reports whether the kernel took it (root only).
func dropCaches() bool {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200) == nil
}

// Build compiles the workload's program as a static binary
// (CGO_ENABLED=0, linux/amd64, for the guest's initramfs) to out. It uses
// the go command from PATH, or /usr/local/go/bin/go.
func Build(ctx context.Context, out string) error {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return errors.New("guestload: cannot find its own source (built with -trimpath?)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(filepath.Dir(file), "cmd", "guestload")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build guestload: %w\n%s", err, b)
	}
	return nil
}
