package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// proc is one live process read from /proc.
type proc struct {
	pid, ppid int
	comm      string
}

func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var ps []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ps = append(ps, proc{pid: pid, ppid: ppid, comm: s[open+1 : closing]})
	}
	return ps
}

// descendants lists the live processes below pid.
func descendants(all []proc, pid int) []proc {
	children := map[int][]proc{}
	for _, p := range all {
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

// memory is a process's proportional and resident set sizes, in kB, from
// /proc/PID/smaps_rollup.
type memory struct {
	Pss, PssAnon, PssFile, Rss int64
}

func (m *memory) add(o memory) {
	m.Pss += o.Pss
	m.PssAnon += o.PssAnon
	m.PssFile += o.PssFile
	m.Rss += o.Rss
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Pss:":
			m.Pss = v
		case "Pss_Anon:":
			m.PssAnon = v
		case "Pss_File:":
			m.PssFile = v
		case "Rss:":
			m.Rss = v
		}
	}
	return m, sc.Err()
}
