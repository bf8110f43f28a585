// Command virtiofsd-shim runs virtiofsd as a socket-activated systemd service:
// see `virtiofsd-shim --help` and virtiofsd-shim(8).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/generator"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
)

// version is stamped at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// First of all: SIGUSR1 is how the socket's release (virtiofsd-shim
	// release) asks a running shim to give up its socket, and it may come
	// the moment systemd has started the service. Its default action would
	// kill the shim; caught from here on, it is remembered until run reads
	// it (the channel holds one).
	releases := make(chan os.Signal, 1)
	signal.Notify(releases, syscall.SIGUSR1)
	if filepath.Base(os.Args[0]) == generator.Name {
		os.Exit(generatorMain(os.Args[1:], os.Stderr))
	}
	os.Exit(mainWith(context.Background(), os.Args[1:], os.Stdout, os.Stderr, releases))
}

// Main runs one command line and returns the process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return mainWith(ctx, args, stdout, stderr, nil)
}

// mainWith is Main with the SIGUSR1s main caught (nil: run catches them
// itself).
func mainWith(ctx context.Context, args []string, stdout, stderr io.Writer, releases <-chan os.Signal) int {
	log := logsink.NewShimLog(stderr)
	err := dispatch(ctx, args, stdout, stderr, log, releases)
	code := exitcode.For(err)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitcode.OK
	case err != nil && log.Journaled():
		log.WithField("exit_status", code).Error(err.Error())
	case err != nil:
		// Plain text for a person at a terminal: no quoting of the message.
		fmt.Fprintf(stderr, "virtiofsd-shim: %v\n", err)
	}
	return code
}

const topUsage = `virtiofsd-shim runs virtiofsd as a socket-activated systemd service.

Usage:
  virtiofsd-shim run [flags] [-- virtiofsd-args...]   what virtiofsd@NAME.service runs
  virtiofsd-shim check NAME                             validate an instance's config offline
  virtiofsd-shim list [--user] [--json] [NAME...]       instances known to systemd or configured
  virtiofsd-shim generate [--dry-run] [--user] [DIR]    the systemd generator: configs to unit drop-ins
  virtiofsd-shim release --instance=NAME                what the socket's stop runs: end a waiting virtiofsd
  virtiofsd-shim standby --instance=NAME                what a STANDBY=yes socket's start runs
  virtiofsd-shim resume --instance=NAME                 what the service's stop runs: a deferred socket restart
  virtiofsd-shim reload --instance=NAME                 what systemctl reload runs: swap virtiofsd under the VM
  virtiofsd-shim upgrade-plan [--for=package|virtiofsd] what the package's scripts run: the sessions an upgrade moves
  virtiofsd-shim version                                print the version

Run "virtiofsd-shim COMMAND --help" for a command's flags and examples.

Quick start:
  printf 'SHARED_DIR=/srv/vm1\n' > /etc/virtiofsd/vm1.conf
  systemctl enable --now virtiofsd@vm1.socket     # socket /run/virtiofsd/vm1.sock
  journalctl -u virtiofsd@vm1

Rootless, your own instance (Rust virtiofsd; run, check and list take --user):
  echo SHARED_DIR=$HOME/vm1 > ~/.config/virtiofsd/vm1.conf
  systemctl --user enable --now virtiofsd@vm1.socket   # $XDG_RUNTIME_DIR/virtiofsd/vm1.sock

`

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, log *logsink.ShimLog, releases <-chan os.Signal) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage, exitTable())
		return &exitcode.UsageError{Msg: "no command given: use run, check, list, generate or version"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, rest, stderr, log, releases)
	case "check":
		return checkCmd(ctx, rest, stdout, stderr)
	case "list":
		return listCmd(ctx, rest, stdout, stderr)
	case "generate":
		return generateCmd(ctx, rest, stdout, stderr)
	case "release":
		return releaseCmd(ctx, rest, stderr)
	case "standby":
		return standbyCmd(ctx, rest, stderr)
	case "resume":
		return resumeCmd(ctx, rest, stderr)
	case "reload":
		return reloadCmd(ctx, rest, stdout, stderr)
	case "upgrade-plan":
		return upgradePlanCmd(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "virtiofsd-shim %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage, exitTable())
		return nil
	}
	fmt.Fprint(stderr, topUsage)
	return &exitcode.UsageError{Msg: fmt.Sprintf("unknown command %q: use run, check, list, generate or version", cmd)}
}

// exitTable renders exitcode.Table for --help.
func exitTable() string {
	var b strings.Builder
	b.WriteString("Exit status:\n")
	for _, r := range exitcode.Table {
		fmt.Fprintf(&b, "  %-6s %s\n", r.Code, r.Meaning)
	}
	return b.String()
}

// newFlagSet makes a flag set that prints usage and examples on --help and
// reports bad flags as usage errors.
func newFlagSet(name, usage string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitcode.UsageError{Msg: fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	return nil
}

// usageErrorf makes an error that exits with the usage status.
func usageErrorf(format string, a ...any) error {
	return &exitcode.UsageError{Msg: fmt.Sprintf(format, a...)}
}
