package instances

import (
	"strconv"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// ExitOf is the Exit that systemd's ExecMainCode (a waitid(2) si_code) and
// ExecMainStatus of a service describe.
func ExitOf(code int64, status int) Exit {
	return Exit{Code: exitCodeName(code), Status: status, Meaning: exitMeaning(code, status)}
}

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
	switch code {
	case 1:
		return exitcode.Explain(status)
	case 2, 3:
		return "the shim was killed by signal " + exitcode.SignalName(status)
	}
	return ""
}
