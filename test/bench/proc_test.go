package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
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
