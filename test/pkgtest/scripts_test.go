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
	require.NoError(t, os.WriteFile(filepath.Join(dir, "systemctl"),
		[]byte("#!/bin/sh\necho \"$*\" >>"+log+"\nexit "+status+"\n"), 0o755))
	setup := "mount -t tmpfs tmpfs /run"
	if systemd {
		setup += " && mkdir -p /run/systemd/system"
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		setup+` && exec sh "$0" "$1"`, filepath.Join(testdir.RepoRoot(), "packaging", "scripts", script), arg)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	b, err := cmd.CombinedOutput()
	logged, rerr := os.ReadFile(log)
	if rerr == nil {
		calls = strings.Split(strings.TrimSpace(string(logged)), "\n")
	}
	return calls, string(b), err
}
