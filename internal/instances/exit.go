package instances

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// exitCodeName names systemd's ExecMainCode, a waitid(2) si_code.
func exitCodeName(code int64) string {
	switch code {
	case 1:
		return "exited"
	case 2:
		return "killed"
	case 3:
		return "dumped"
	}
	return "code-" + strconv.FormatInt(code, 10)
}

// exitMeaning explains an exit status from exitcode.Table, or names the
// signal that killed the shim.
func exitMeaning(code int64, status int) string {
	if code == 2 || code == 3 {
		return "the shim was killed by signal " + signalName(status)
	}
	if code != 1 {
		return ""
	}
	for _, r := range exitcode.Table {
		if matchCode(r.Code, status) {
			if status > 128 {
				return strings.Replace(r.Meaning, "signal N", "signal "+signalName(status-128), 1)
			}
			return r.Meaning
		}
	}
	return "unknown exit status"
}

// matchCode tells whether status fits a Table code: "64", "1-63" or "128+N".
func matchCode(code string, status int) bool {
	if n, err := strconv.Atoi(code); err == nil {
		return n == status
	}
	if lo, hi, ok := strings.Cut(code, "-"); ok {
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		return err1 == nil && err2 == nil && l <= status && status <= h
	}
	if base, ok := strings.CutSuffix(code, "+N"); ok {
		b, err := strconv.Atoi(base)
		return err == nil && status > b && status < b+65
	}
	return false
}

// signalName is "9 (SIGKILL)", or the number alone when it has no name.
func signalName(n int) string {
	if name := unix.SignalName(syscall.Signal(n)); name != "" {
		return fmt.Sprintf("%d (%s)", n, name)
	}
	return strconv.Itoa(n)
}
