package pkgtest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// The maintainer scripts serve deb (words) and rpm (counts): each argument
// either one passes, with and without a running systemd, and the systemctl
// calls that follow. A failing systemctl never fails the script: it would
// block an install or a removal.
func TestMaintainerScriptsCallSystemctlOnlyWhereTheyMust(t *testing.T) {
	sdbox.RequireRoot(t) // a private mount namespace with its own /run
	const (
		reload  = "daemon-reload"
		stop    = "stop virtiofsd@*.socket virtiofsd@*.service"
		disable = "--no-reload disable virtiofsd@.socket"
		list    = "list-units --plain --no-legend --state=active virtiofsd@*.service"
	)
	cases := []struct {
		script  string
		args    []string
		running []string // calls with systemd running
		offline []string // calls without
	}{
		// deb postinst configure, rpm %post on install (1) and upgrade (2).
		{"postinstall.sh", []string{"configure", "1", "2"}, []string{reload}, nil},
		{"postinstall.sh", []string{"abort-upgrade"}, []string{reload}, nil},
		// Upgrades: a dpkg trigger on virtiofsd reloads the running
		// sessions that have the front (vm1, not vm2: runScript's
		// systemctl runs both, vm1's state says "front": true), which
		// refuses without harm where a swap is not safe. A deb upgrade and
		// rpm %posttrans restart nothing (a session that cannot be saved
		// would be cut): they only list the instances to name them.
		{"postinstall.sh", []string{"configure 1.0-1"}, []string{reload, list}, nil},
		{"postinstall.sh", []string{"triggered /usr/libexec/virtiofsd"}, []string{list, "reload virtiofsd@vm1.service"}, nil},
		{"posttrans.sh", []string{"0", "1"}, []string{list}, nil},
		// Removal: deb prerm remove, rpm %preun erase (0).
		{"preremove.sh", []string{"remove", "0"}, []string{stop, disable}, []string{disable}},
		// Upgrades and the rest: nothing is stopped or disabled.
		{"preremove.sh", []string{"upgrade", "1", "deconfigure", "failed-upgrade"}, nil, nil},
		{"postremove.sh", []string{"remove", "purge", "0"}, []string{reload}, nil},
		{"postremove.sh", []string{"upgrade", "1", "abort-install", "abort-upgrade", "failed-upgrade", "disappear"}, nil, nil},
	}
	for _, c := range cases {
		for _, arg := range c.args {
			for _, systemd := range []bool{true, false} {
				want := c.offline
				if systemd {
					want = c.running
				}
				for _, fail := range []bool{false, true} {
					calls, out, err := runScript(t, c.script, arg, systemd, fail)
					what := c.script + " " + arg
					if !systemd {
						what += ", no systemd"
					}
					if fail {
						what += ", systemctl failing"
					}
					assert.NoError(t, err, "%s: %s", what, out)
					assert.Equal(t, want, calls, what)
				}
			}
		}
	}
}

// runScript runs a maintainer script in a mount namespace whose /run has
// /run/systemd/system or not, with a systemctl that records its arguments
// and exits 0, or 1 when fail is set.
func runScript(t *testing.T, script, arg string, systemd, fail bool) (calls []string, out string, err error) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	status := "0"
	if fail {
		status = "1"
	}
	// It lists two running instances, vm1 with the front and vm2 without.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "systemctl"),
		[]byte("#!/bin/sh\necho \"$*\" >>"+log+"\n"+
			"[ \"$1\" = list-units ] && printf 'virtiofsd@vm1.service loaded active running x\\nvirtiofsd@vm2.service loaded active running y\\n'\n"+
			"exit "+status+"\n"), 0o755))
	setup := "mount -t tmpfs tmpfs /run && mkdir /run/virtiofsd-shim && " +
		`echo '{"front": true}' >/run/virtiofsd-shim/vm1.json && echo '{"front": false}' >/run/virtiofsd-shim/vm2.json`
	if systemd {
		setup += " && mkdir -p /run/systemd/system"
	}
	args := append([]string{"-c", setup + ` && exec sh "$@"`, "sh", filepath.Join(testdir.RepoRoot(), "packaging", "scripts", script)}, strings.Fields(arg)...)
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	b, err := cmd.CombinedOutput()
	logged, rerr := os.ReadFile(log)
	if rerr == nil {
		calls = strings.Split(strings.TrimSpace(string(logged)), "\n")
	}
	return calls, string(b), err
}
