package instances

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// statusPID finds the virtiofsd pid in the shim's STATUS= texts:
// "... (virtiofsd pid N)", "Starting virtiofsd (pid N) ...",
// "Stopping virtiofsd (pid N)", "... virtiofsd (pid N) is shutting down".
var statusPID = regexp.MustCompile(`virtiofsd(?: \(pid| pid) ([0-9]+)\b`)

// procView reads processes of systemd's pid namespace, when it can.
type procView struct {
	root     string
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
	if m := statusPID.FindStringSubmatch(status); m != nil {
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			return nil
		}
		if v.root == "" || !v.exists(*mainPID) {
			return &pid // another pid namespace, or no /proc: trust the shim
		}
		if ppid, ok := v.ppid(pid); ok && ppid == *mainPID {
			return &pid
		}
		return nil // it has exited already
	}
	if v.root == "" {
		return nil
	}
	if kids := v.childrenOf(*mainPID); len(kids) == 1 {
		return &kids[0]
	}
	return nil
}

func (v *procView) exists(pid int) bool {
	_, err := os.Stat(filepath.Join(v.root, strconv.Itoa(pid)))
	return err == nil
}

// ppid reads the parent pid from /proc/PID/stat: the field after the
// command's closing parenthesis and the state.
func (v *procView) ppid(pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(v.root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// childrenOf scans /proc once (the kernel here has no
// /proc/PID/task/TID/children) and returns pid's children.
func (v *procView) childrenOf(pid int) []int {
	if v.children == nil {
		v.children = map[int][]int{}
		entries, _ := os.ReadDir(v.root)
		for _, e := range entries {
			p, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if pp, ok := v.ppid(p); ok {
				v.children[pp] = append(v.children[pp], p)
			}
		}
	}
	return v.children[pid]
}
