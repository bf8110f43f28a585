package config

import (
	"errors"
	"strconv"
	"strings"

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
	Code string // what kind of problem, stable for scripts: see the Code constants; "" for others
	Msg  string // what is wrong and how to fix it
	Err  error  // the cause, or nil
}

// The codes of Error.Code.
const (
	CodeUnknownKey    = "unknown-key"        // a key the shim does not know
	CodeDuplicateKey  = "duplicate-key"      // a key set on two lines
	CodeBadValue      = "bad-value"          // a value the key does not take
	CodeMissingShared = "missing-shared-dir" // no SHARED_DIR, or it does not exist
)

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

// Errors is every problem a configuration file has, in the order of its
// lines, when it has more than one: Parse and the functions that read a file
// report them all at once, so that one run of check shows each. A single
// problem is returned as a bare *Error. errors.As finds the first *Error.
type Errors []*Error

// ExitCode is the shim's exit status for every config error.
func (e Errors) ExitCode() int { return exitcode.Config }

// Error returns each problem's message, one a line.
func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the problems, for errors.As and errors.Is.
func (e Errors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, err := range e {
		errs[i] = err
	}
	return errs
}

// Problems lists the config problems err carries: each of an Errors, the
// *Error it is or wraps, or none.
func Problems(err error) []*Error {
	var many Errors
	if errors.As(err, &many) {
		return many
	}
	var one *Error
	if errors.As(err, &one) {
		return []*Error{one}
	}
	return nil
}

// joinErrors returns nil, the one problem, or Errors.
func joinErrors(errs []*Error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return Errors(errs)
}
