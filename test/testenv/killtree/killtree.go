// Package killtree kills a process and every process below it, as a crash
// would: the Rust virtiofsd serves from a sandboxed child, so killing the
// parent alone leaves the child serving for a moment.
package killtree

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Kill sends SIGKILL to pid's children (read from
// /proc/PID/task/PID/children, which is cheap enough to sit inside a
// measured crash), their children, and then pid. A process that has gone
// already is no error.
func Kill(pid int) error {
	var errs []error
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, c := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(c); err == nil {
			errs = append(errs, Kill(n))
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
	}
	return errors.Join(errs...)
}
