package instances

import (
	"regexp"
	"strconv"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
)

// statusPID finds the virtiofsd pid in the shim's STATUS= texts:
// "... (virtiofsd pid N)", "Starting virtiofsd (pid N) ...",
// "Stopping virtiofsd (pid N)", "... virtiofsd (pid N) is shutting down".
var statusPID = regexp.MustCompile(`virtiofsd(?: \(pid| pid) ([0-9]+)\b`)

// procView reads processes of systemd's pid namespace, when it can.
type procView struct {
	root     string        // "": no /proc to read (another pid namespace)
	children map[int][]int // parent pid -> children, read once on demand
}

func newProcView(root string) *procView { return &procView{root: root} }

// virtiofsdPID returns virtiofsd's pid for a service whose main process
// (the shim) is mainPID: the one in the shim's status text, kept only if
// /proc says it is the shim's child when /proc shows the shim; without a
// pid in the text, the shim's only child found in /proc.
func (v *procView) virtiofsdPID(mainPID *int, status string) *int {
	if mainPID == nil {
		return nil
	}
	tab := proctree.Table{Root: v.root}
	if m := statusPID.FindStringSubmatch(status); m != nil {
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			return nil
		}
		if v.root == "" {
			return &pid // no /proc: trust the shim
		}
		if _, ok := tab.Read(*mainPID); !ok {
			return &pid // the shim is in another pid namespace: trust it
		}
		if p, ok := tab.Read(pid); ok && p.PPID == *mainPID {
			return &pid
		}
		return nil // it has exited already
	}
	if v.root == "" {
		return nil
	}
	if kids := v.childrenOf(tab, *mainPID); len(kids) == 1 {
		return &kids[0]
	}
	return nil
}

// childrenOf scans /proc once (the kernel here has no
// /proc/PID/task/TID/children) and returns pid's children.
func (v *procView) childrenOf(tab proctree.Table, pid int) []int {
	if v.children == nil {
		v.children = map[int][]int{}
		for _, p := range tab.All() {
			v.children[p.PPID] = append(v.children[p.PPID], p.PID)
		}
	}
	return v.children[pid]
}
