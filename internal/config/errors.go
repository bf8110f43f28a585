package config

import (
	"strconv"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// Error is the error every function of this package returns when a
// configuration is refused: the instance name, the file, or a value in it.
// Callers map it to the configuration exit code with errors.As. It wraps the
// underlying cause, if any: a missing file wraps fs.ErrNotExist.
type Error struct {
	File string // the configuration file, "" when not about a file
	Line int    // 1-based line in File, 0 when not about one line
	Key  string // the key concerned, "" when none
	Msg  string // what is wrong and how to fix it
	Err  error  // the cause, or nil
}

// ExitCode is the shim\'s exit status for every config error.
func (e *Error) ExitCode() int { return exitcode.Config }

// Error returns "FILE:LINE: MSG", "FILE: MSG" or "MSG".
func (e *Error) Error() string {
	switch {
	case e.File == "":
		return e.Msg
	case e.Line == 0:
		return e.File + ": " + e.Msg
	default:
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
