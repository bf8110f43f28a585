package main

import (
	"context"
	"io"
	"os"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
)

const upgradePlanUsage = `Usage: virtiofsd-shim upgrade-plan [--for=package|virtiofsd]

What the package's maintainer scripts run after an upgrade. Prints the
running system instances whose session the upgrade moves, one
virtiofsd@NAME.service a line, and says on stderr which running instances
it leaves as they are, and why. It only reads; the scripts act.

A session moves only when its shim says it is movable (list --json:
.service.state.movable): the front runs (FRONT=auto, the Rust virtiofsd),
no THREAD_POOL_SIZE, and the VM negotiated the state transfer and sent no
request the front does not know, no packed ring, and no live migration is
under way. Any other session would be cut by a restart: it keeps the
binaries it runs until its VM disconnects, and list says it runs an older
binary.

--for=package (the default): this package was upgraded; the scripts run
systemctl restart on each unit printed (a new shim and virtiofsd, the VM
kept). --for=virtiofsd: virtiofsd's binary changed (the dpkg trigger); the
scripts run systemctl reload on each (a new virtiofsd under the VM).
User instances are never moved by a package: list --user says when they run
an older binary. Exit status 69: systemd cannot be reached.

Examples:
  virtiofsd-shim upgrade-plan
  for unit in $(virtiofsd-shim upgrade-plan); do systemctl restart "$unit"; done
  virtiofsd-shim upgrade-plan --for=virtiofsd
`

func upgradePlanCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("upgrade-plan", upgradePlanUsage, stderr)
	what := fs.String("for", string(instances.PackageUpgrade), "what was upgraded: `package` (restart) or virtiofsd (reload)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	u, err := instances.ParseUpgrade(*what)
	if err != nil {
		return usageErrorf("upgrade-plan: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("upgrade-plan: takes no arguments")
	}
	scope := config.System
	dir, err := scope.ConfigDir(os.Getenv)
	if err != nil {
		return err
	}
	l, err := connectLister(ctx, scope, dir)
	if err != nil {
		return err
	}
	defer l.Bus.Close()
	list, err := l.List(ctx, nil)
	if err != nil {
		return err
	}
	return instances.WritePlan(stdout, stderr, instances.UpgradePlan(list), u)
}
