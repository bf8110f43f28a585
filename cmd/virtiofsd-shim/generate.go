package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
)

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
	scope := config.ScopeOf(*user)
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
		out = generator.OutputDir(scope)
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

// generatorMain is the shim run by systemd as a generator (see
// generator.Run): its lines go to the console and the journal or kernel log.
func generatorMain(args []string, stderr io.Writer) int {
	log := logsink.NewConsoleLog(stderr, generator.Name)
	err := generator.Run(args, os.Getenv, log)
	if err != nil {
		fmt.Fprintf(log, "%s: %v\n", generator.Name, err)
	}
	return exitcode.For(err)
}
