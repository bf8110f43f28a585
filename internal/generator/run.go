package generator

import (
	"fmt"
	"io"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// Name is the name systemd runs the shim under as a generator:
// /usr/lib/systemd/system-generators/virtiofsd-shim-generator (and the user
// generator folder) is a symbolic link to the shim.
const Name = "virtiofsd-shim-generator"

// Path is the scope's generator as installed.
func Path(s config.Scope) string {
	return "/usr/lib/systemd/" + s.String() + "-generators/" + Name
}

// OutputDir is systemd's normal generator output folder of the scope
// (config.Scope.GeneratorDir), as a person reads it (a dry run shows it):
// with $XDG_RUNTIME_DIR unexpanded for a user's.
func OutputDir(s config.Scope) string {
	if s == config.User {
		return "$XDG_RUNTIME_DIR/systemd/generator"
	}
	dir, _ := config.System.GeneratorDir(func(string) string { return "" }) // the system scope reads no environment
	return dir
}

// Run is the generator as systemd runs it: args are NORMAL-DIR [EARLY-DIR
// LATE-DIR], env names the scope (SYSTEMD_SCOPE) and its config folder. A
// broken config only skips that instance, with a line on log, and an
// unreadable config folder means no instance. Its error, for
// exitcode.For, is for a wrong command line (a *exitcode.UsageError) or
// drop-ins it could not write.
func Run(args []string, env config.Env, log io.Writer) error {
	if len(args) != 1 && len(args) != 3 {
		return &exitcode.UsageError{Msg: fmt.Sprintf("want the output folders NORMAL-DIR [EARLY-DIR LATE-DIR], as systemd passes them; got %d arguments", len(args))}
	}
	scope, err := config.ScopeFromEnv(env)
	if err != nil {
		return &exitcode.UsageError{Msg: err.Error()}
	}
	dir, err := scope.ConfigDir(env)
	if err != nil {
		return err
	}
	results, err := Generate(scope, dir)
	if err != nil {
		// An unreadable folder is no reason to fail the boot: nothing to do.
		fmt.Fprintf(log, "%s: %v: no instance configured\n", Name, err)
		return nil
	}
	return Write(args[0], results, log)
}
