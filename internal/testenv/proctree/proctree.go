// Package proctree reads this machine's process table from /proc, for tests
// and benchmarks that look at what runs below a process or is left behind.
package proctree

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Proc is one process as /proc/PID/stat and cmdline describe it.
type Proc struct {
	PID, PPID int
	Comm      string // the name in stat, at most 15 bytes
	State     string // R, S, D, Z, ...
	Cmdline   string // arguments joined by spaces
}

// Read reads one process; ok is false once it is gone.
func Read(pid int) (p Proc, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return Proc{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 2 {
		return Proc{}, false
	}
	p = Proc{PID: pid, Comm: s[open+1 : closing], State: f[0]}
	p.PPID, _ = strconv.Atoi(f[1])
	cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.Cmdline = strings.TrimSpace(string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))
	return p, true
}

// All lists the live processes of the machine (zombies have ended).
func All() []Proc {
	ents, _ := os.ReadDir("/proc")
	var ps []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := Read(pid); ok && p.State != "Z" {
			ps = append(ps, p)
		}
	}
	return ps
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

// Alive reports whether pid still runs.
func Alive(pid int) bool {
	p, ok := Read(pid)
	return ok && p.State != "Z"
}
