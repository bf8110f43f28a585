package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
)

// GeneratorName is the name systemd runs the shim under as a generator:
// /usr/lib/systemd/system-generators/virtiofsd-shim-generator (and the user
// generator folder) is a symbolic link to the shim.
const GeneratorName = "virtiofsd-shim-generator"

// defaultGeneratorDir is systemd's normal generator output folder, shown by
// a dry run.
func defaultGeneratorDir(s config.Scope) string {
	if s == config.User {
		return "$XDG_RUNTIME_DIR/systemd/generator"
	}
	return "/run/systemd/generator"
}

const generateUsage = `Usage: virtiofsd-shim generate [flags] [OUTPUT-DIR]

What systemd runs at boot and on daemon-reload, as the generator
virtiofsd-shim-generator (systemd.generator(7)): reads every CONFIG-DIR/*.conf
and writes each instance's drop-ins into OUTPUT-DIR:
  virtiofsd@NAME.socket.d/50-virtiofsd-shim.conf   SocketUser=, SocketGroup=,
      SocketMode= (SOCKET_USER, SOCKET_GROUP, SOCKET_MODE) and STANDBY=yes
  virtiofsd@NAME.service.d/50-virtiofsd-shim.conf  RequiresMountsFor=SHARED_DIR
A broken config is skipped with its reason on stderr; the others are written.
With --dry-run it writes nothing and prints what it would write.

Examples:
  virtiofsd-shim generate --dry-run                # what the next daemon-reload applies
  virtiofsd-shim generate --dry-run --user         # the same for your user instances
  virtiofsd-shim generate /tmp/out                 # write them somewhere to look at
`

func generateCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("generate", generateUsage, stderr)
	dryRun := fs.Bool("dry-run", false, "print the drop-ins instead of writing them")
	user := fs.Bool("user", false, "the user manager's instances ($XDG_CONFIG_HOME/virtiofsd) instead of the system's")
	configDir := fs.String("config-dir", "", "`folder` of the instance configs (default: the scope's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	scope := config.System
	if *user {
		scope = config.User
	}
	dir := *configDir
	if dir == "" {
		var err error
		if dir, err = scope.ConfigDir(os.Getenv); err != nil {
			return err
		}
	}
	var out string
	switch {
	case fs.NArg() == 1:
		out = fs.Arg(0)
	case fs.NArg() == 0 && *dryRun:
		out = defaultGeneratorDir(scope)
	default:
		fs.Usage()
		return usageErrorf("generate: give the output folder, or --dry-run")
	}
	results, err := generator.Generate(scope, dir)
	if err != nil {
		return err
	}
	if *dryRun {
		generator.Print(out, results, stdout, stderr)
		return nil
	}
	return generator.Write(out, results, stderr)
}

// generatorMain is the shim run by systemd as a generator: argv is
// NORMAL-DIR [EARLY-DIR LATE-DIR], the scope comes from SYSTEMD_SCOPE. Its
// status is 0 unless it cannot write at all: a broken config only skips
// that instance.
func generatorMain(args []string, stderr io.Writer) int {
	stderr = newGeneratorLog(stderr)
	if len(args) != 1 && len(args) != 3 {
		fmt.Fprintf(stderr, "%s: want the output folders NORMAL-DIR [EARLY-DIR LATE-DIR], as systemd passes them; got %d arguments\n", GeneratorName, len(args))
		return 64
	}
	scope, err := config.ScopeFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", GeneratorName, err)
		return 1
	}
	dir, err := scope.ConfigDir(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", GeneratorName, err)
		return 1
	}
	results, err := generator.Generate(scope, dir)
	if err != nil {
		// An unreadable folder is no reason to fail the boot: nothing to do.
		fmt.Fprintf(stderr, "%s: %v: no instance configured\n", GeneratorName, err)
		return 0
	}
	if err := generator.Write(args[0], results, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", GeneratorName, err)
		return 1
	}
	return 0
}

// generatorLog copies each line the generator reports to where an admin
// finds it: systemd runs generators with stderr on the console, so a line
// also goes to the journal when journald runs (daemon-reload), else to the
// kernel log, which journald reads at boot (as systemd's own generators do).
type generatorLog struct {
	stderr  io.Writer
	journal bool
	kmsg    io.Writer
}

func newGeneratorLog(stderr io.Writer) *generatorLog {
	l := &generatorLog{stderr: stderr, journal: journal.Enabled()}
	if !l.journal {
		if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
			l.kmsg = f // left open: the generator exits soon
		}
	}
	return l
}

func (l *generatorLog) Write(p []byte) (int, error) {
	n, err := l.stderr.Write(p)
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimPrefix(string(line), GeneratorName+": ")
		switch {
		case l.journal:
			_ = journal.Send(msg, journal.PriWarning, map[string]string{"SYSLOG_IDENTIFIER": GeneratorName})
		case l.kmsg != nil:
			_, _ = fmt.Fprintf(l.kmsg, "<4>%s[%d]: %s\n", GeneratorName, os.Getpid(), msg)
		}
	}
	return n, err
}
