package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

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

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux
// whatever the kernel's HZ).
const clockTick = 10 * time.Millisecond

// processCPU is a process's name and its CPU time, user and system, from
// /proc/PID/stat: every thread of it, those that have ended too (the
// kernel keeps their time in the thread group), in clock ticks.
func processCPU(pid int) (comm string, cpu time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("/proc/%d/stat: no (comm)", pid)
	}
	// After "(comm) ": state, ppid, ... utime is the 14th field of the
	// line, stime the 15th: the 12th and 13th after the comm.
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, fmt.Errorf("/proc/%d/stat: %d fields after the comm", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return s[open+1 : end], time.Duration(utime+stime) * clockTick, nil
}
