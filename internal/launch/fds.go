package launch

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeOnExecAbove2 marks every descriptor from 3 up close-on-exec, so that
// virtiofsd inherits only stdio and the socket (passed through ExtraFiles,
// which clears the flag on its copy). Descriptors the shim itself inherited
// without the flag would otherwise flow on to virtiofsd.
func closeOnExecAbove2() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Linux before 5.11: walk the open descriptors.
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd > 2 && fd != int(d.Fd()) {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
