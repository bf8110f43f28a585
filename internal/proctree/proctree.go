// Package proctree reads a process table from a /proc file system: which
// process is whose child, its name and command line.
package proctree

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Proc is one process as /proc/PID/stat and cmdline describe it.
type Proc struct {
	PID, PPID int
	Comm      string // the name in stat, at most 15 bytes
	State     string // R, S, D, Z, ...
	Cmdline   string // arguments joined by spaces
}

// Table is the process table of a procfs mounted at Root (tests use a
// folder of the same shape).
type Table struct {
	Root string
}

// Read reads one process; ok is false once it is gone.
func (t Table) Read(pid int) (p Proc, ok bool) {
	dir := filepath.Join(t.Root, strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Proc{}, false
	}
	// "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return Proc{}, false
	}
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 2 {
		return Proc{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Proc{}, false
	}
	p = Proc{PID: pid, PPID: ppid, Comm: string(b[open+1 : closing]), State: f[0]}
	cl, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	p.Cmdline = strings.TrimSpace(string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))
	return p, true
}

// Threads is how many threads pid runs (num_threads, the 20th field of
// /proc/PID/stat); ok is false once it is gone.
func (t Table) Threads(pid int) (n int, ok bool) {
	b, err := os.ReadFile(filepath.Join(t.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	closing := bytes.LastIndexByte(b, ')')
	if closing < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[closing+1:])) // from the 3rd field, state
	if len(f) < 18 {
		return 0, false
	}
	n, err = strconv.Atoi(f[17])
	return n, err == nil
}

// TreeThreads sums the threads of those of pids that still run.
func (t Table) TreeThreads(pids []int) int {
	n := 0
	for _, pid := range pids {
		if k, ok := t.Threads(pid); ok {
			n += k
		}
	}
	return n
}

// WaitThreads polls every poll until pids run at most n threads (true),
// the first of them is gone, or ctx ends (false).
func (t Table) WaitThreads(ctx context.Context, pids []int, n int, poll time.Duration) bool {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if _, ok := t.Threads(pids[0]); !ok {
			return false
		}
		if t.TreeThreads(pids) <= n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// All lists the live processes (zombies have ended).
func (t Table) All() []Proc {
	ents, _ := os.ReadDir(t.Root)
	var ps []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := t.Read(pid); ok && p.State != "Z" {
			ps = append(ps, p)
		}
	}
	return ps
}

// Alive reports whether pid still runs.
func (t Table) Alive(pid int) bool {
	p, ok := t.Read(pid)
	return ok && p.State != "Z"
}

// Descendants lists the processes of all below pid, breadth first.
func Descendants(all []Proc, pid int) []Proc {
	children := map[int][]Proc{}
	for _, p := range all {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var out []Proc
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
		queue = queue[1:]
	}
	return out
}

// Host is this machine's process table.
const Host = "/proc"

// Read reads one process of this machine.
func Read(pid int) (Proc, bool) { return Table{Root: Host}.Read(pid) }

// Tree is pid and the pids of all below it on this machine, pid first.
func Tree(pid int) []int {
	pids := []int{pid}
	for _, p := range Descendants(All(), pid) {
		pids = append(pids, p.PID)
	}
	return pids
}

// Threads is how many threads pid runs on this machine.
func Threads(pid int) (int, bool) { return Table{Root: Host}.Threads(pid) }

// TreeThreads sums the threads of those of pids that run on this machine.
func TreeThreads(pids []int) int { return Table{Root: Host}.TreeThreads(pids) }

// WaitThreads is Table.WaitThreads on this machine.
func WaitThreads(ctx context.Context, pids []int, n int, poll time.Duration) bool {
	return Table{Root: Host}.WaitThreads(ctx, pids, n, poll)
}

// All lists this machine's live processes.
func All() []Proc { return Table{Root: Host}.All() }

// Alive reports whether pid runs on this machine.
func Alive(pid int) bool { return Table{Root: Host}.Alive(pid) }
