package instances

import (
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/proctree"
)

// procView reads processes of systemd's pid namespace, when it can.
type procView struct {
	root     string        // "": no /proc to read (another pid namespace)
	children map[int][]int // parent pid -> children, read once on demand
}

func newProcView(root string) *procView { return &procView{root: root} }

// virtiofsdPID returns virtiofsd's pid for a service whose main process
// (the shim) is mainPID: the one in the shim's typed state (statePID, 0
// for none), kept only if /proc says it is the shim's child when /proc
// shows the shim; without one, the shim's only child found in /proc.
func (v *procView) virtiofsdPID(mainPID *int, statePID int) *int {
	if mainPID == nil {
		return nil
	}
	tab := proctree.Table{Root: v.root}
	if statePID != 0 {
		pid := statePID
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
