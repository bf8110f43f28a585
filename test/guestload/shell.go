package guestload

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// ShellGroup is the group of the shell workload's records.
const ShellGroup = "shell"

// ShellSteps are the shell workload's steps, in order, as its result
// record names them (Record.Steps).
var ShellSteps = []string{"echo", "ls", "read", "rm", "dd-write", "drop", "dd-read"}

// ShellParams are the shell workload's sizes. The zero value is not
// useful: see DefaultShell and TinyShell.
type ShellParams struct {
	Files      int           // files of the echo, read and rm loops
	MiB        int           // size of the file dd writes with conv=fsync and reads back
	Pause      time.Duration // idle time after the begin and the result line
	DropCaches bool          // drop the guest's caches before the begin line and between the two dd's (needs root)
}

// DefaultShell are the sizes of the data-path benchmark (issue 27's shape).
func DefaultShell() ShellParams {
	return ShellParams{Files: 1000, MiB: 32, Pause: 300 * time.Millisecond, DropCaches: true}
}

// TinyShell are sizes for a functional run.
func TinyShell() ShellParams { return ShellParams{Files: 20, MiB: 1} }

// shellSafe is what a folder or a share label may hold to go into the
// script and its JSON lines unquoted.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)

// ShellScript is the shell workload: a POSIX sh script (busybox sh in the
// guest) that works in dir/shell, many small synchronous operations, each a
// round trip to virtiofsd that the shell waits for:
//
//	echo     echo $i > f$i for Files files
//	ls       ls -l, twice
//	read     read x < f$i for each file (and checks that x is $i)
//	rm       rm f$i for each file (one rm process each)
//	dd-write dd of MiB MiB from /dev/zero with conv=fsync
//	drop     drop the guest's caches (DropCaches)
//	dd-read  dd the file back to /dev/null
//
// It times itself with /proc/uptime (10 ms resolution) and prints a begin
// and a result record as Run does (group ShellGroup, n 1, unit "run"),
// the result with each step's time in Steps. dir/shell is gone afterwards.
func ShellScript(dir, share string, p ShellParams) (string, error) {
	if p.Files < 1 || p.MiB < 1 || p.Pause < 0 {
		return "", fmt.Errorf("guestload: the shell workload's sizes must be >= 1 and its pause >= 0: %+v", p)
	}
	for _, s := range []string{dir, share} {
		if !shellSafe.MatchString(s) {
			return "", fmt.Errorf("guestload: %q cannot go into the shell workload unquoted: use letters, digits and . _ / -", s)
		}
	}
	pause, drop := ":", ":"
	if p.Pause > 0 {
		pause = fmt.Sprintf("sleep %.3f", p.Pause.Seconds())
	}
	if p.DropCaches {
		drop = "sync; echo 3 > /proc/sys/vm/drop_caches"
	}
	r := strings.NewReplacer("DIR", dir, "SHARE", share, "GROUP", ShellGroup, "FILES", fmt.Sprint(p.Files),
		"MIB", fmt.Sprint(p.MiB), "PAUSE", pause, "DROP", drop)
	return r.Replace(shellTemplate), nil
}

// shellTemplate is ShellScript's text. It runs in a subshell, so that its
// cd and variables stay there. shell_mark adds the time since the last
// mark to the steps' JSON (centiseconds of /proc/uptime, in ns).
const shellTemplate = `(
shell_now() { read shell_up shell_idle < /proc/uptime; shell_t=$(( ${shell_up%.*} * 100 + 1${shell_up#*.} - 100 )); }
shell_mark() { shell_now; shell_steps="$shell_steps${shell_steps:+,}\"$1\":$(( (shell_t - shell_last) * 10000000 ))"; shell_last=$shell_t; }
mkdir -p DIR/shell
cd DIR/shell
DROP
echo '{"event":"begin","share":"SHARE","group":"GROUP"}'
PAUSE
shell_steps= shell_bad=0
shell_now; shell_start=$shell_t shell_last=$shell_t
i=0; while [ $i -lt FILES ]; do echo $i > f$i; i=$((i + 1)); done
shell_mark echo
ls -l > /dev/null; ls -l > /dev/null
shell_mark ls
i=0; while [ $i -lt FILES ]; do read x < f$i; [ "$x" = "$i" ] || shell_bad=$((shell_bad + 1)); i=$((i + 1)); done
shell_mark read
i=0; while [ $i -lt FILES ]; do rm f$i; i=$((i + 1)); done
shell_mark rm
dd if=/dev/zero of=big bs=1048576 count=MIB conv=fsync 2> /dev/null
shell_mark dd-write
DROP
shell_mark drop
dd if=big of=/dev/null bs=1048576 2> /dev/null
shell_mark dd-read
shell_ok=true shell_err=
if [ $shell_bad -ne 0 ]; then shell_ok=false shell_err=",\"error\":\"$shell_bad files read back another content\""; fi
echo "{\"event\":\"result\",\"share\":\"SHARE\",\"group\":\"GROUP\",\"n\":1,\"unit\":\"run\",\"ns\":$(( (shell_last - shell_start) * 10000000 )),\"ok\":$shell_ok$shell_err,\"steps\":{$shell_steps}}"
PAUSE
rm -f big
cd /
rmdir DIR/shell
)
`
