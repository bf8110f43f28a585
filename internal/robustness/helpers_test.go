package robustness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/testenv/shimbox"
)

// proc is one process read from /proc.
type proc struct {
	pid, ppid int
	comm      string
	state     string
	cmdline   string
}

// readProc reads /proc/PID/stat and cmdline; ok is false once it is gone.
func readProc(pid int) (p proc, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return proc{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 2 {
		return proc{}, false
	}
	p = proc{pid: pid, comm: s[open+1 : closing], state: f[0]}
	p.ppid, _ = strconv.Atoi(f[1])
	cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.cmdline = string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
	return p, true
}

// allProcs lists the live (not zombie) processes of the machine.
func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && p.state != "Z" {
			ps = append(ps, p)
		}
	}
	return ps
}

// descendants lists the live processes below pid.
func descendants(pid int) []proc {
	ps := allProcs()
	children := map[int][]proc{}
	for _, p := range ps {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// alive reports whether pid still runs (a zombie has ended).
func alive(pid int) bool {
	p, ok := readProc(pid)
	return ok && p.state != "Z"
}

// virtiofsds lists the virtiofsd processes serving a share under root.
func virtiofsds(root string) []proc {
	var out []proc
	for _, p := range allProcs() {
		if p.comm == "virtiofsd" && strings.Contains(p.cmdline, root) {
			out = append(out, p)
		}
	}
	return out
}

// shims lists the virtiofsd-shim processes inside box b.
func shims(b *shimbox.Box) []proc {
	var out []proc
	for _, pid := range b.Processes() {
		if p, ok := readProc(pid); ok && p.state != "Z" && p.comm == "virtiofsd-shim" {
			out = append(out, p)
		}
	}
	return out
}

// show reads one property of a unit in the box.
func show(ctx context.Context, b *shimbox.Box, unit, prop string) string {
	out, _ := b.Systemctl(ctx, "show", "-p", prop, "--value", unit)
	return strings.TrimSpace(out)
}

// waitFor polls cond every 50 ms until it holds or d passes; it fails the
// test with what last saw.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, d, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEnded waits until unit is no longer active or activating.
func waitEnded(t *testing.T, ctx context.Context, b *shimbox.Box, unit string, d time.Duration) string {
	t.Helper()
	var state string
	waitFor(t, d, unit+" ends", func() (bool, string) {
		state = show(ctx, b, unit, "ActiveState")
		return state == "inactive" || state == "failed", state
	})
	return state
}

// journal returns the box's journal for the given journalctl match
// arguments, as message text.
func journal(ctx context.Context, b *shimbox.Box, args ...string) string {
	out, _ := b.Run(ctx, "journalctl", append([]string{"--no-pager", "-o", "cat"}, args...)...)
	return out
}
