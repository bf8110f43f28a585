package pkgtest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
		planPkg = "upgrade-plan --for=package"
		planVfs = "upgrade-plan --for=virtiofsd"
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
		// Upgrades move the sessions the shim's upgrade-plan selects (vm1,
		// movable; vm2 it leaves, saying why): a deb upgrade and rpm
		// %posttrans restart them, a dpkg trigger on virtiofsd reloads them.
		{"postinstall.sh", []string{"configure 1.0-1"}, []string{reload, planPkg, "restart virtiofsd@vm1.service"}, nil},
		{"postinstall.sh", []string{"triggered /usr/libexec/virtiofsd"}, []string{planVfs, "reload virtiofsd@vm1.service"}, nil},
		{"posttrans.sh", []string{"0", "1"}, []string{planPkg, "restart virtiofsd@vm1.service"}, nil},
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
					calls, out, err := runScript(t, c.script, arg, systemd, fail, false)
					what := c.script + " " + arg
					if !systemd {
						what += ", no systemd"
					}
					if fail {
						what += ", systemctl failing"
					}
					assert.NoError(t, err, "%s: %s", what, out)
					assert.Equal(t, want, calls, what)
					if systemd && slices.Contains(calls, planPkg) {
						assert.Contains(t, out, "virtiofsd-shim: virtiofsd@vm2.service is left as it is: FRONT=no", what)
					}
				}
			}
		}
	}
}

// When the shim cannot tell which sessions can move (systemd cannot be
// asked), the scripts touch none, say so, and succeed.
func TestMaintainerScriptsTouchNoSessionWhenTheShimCannotTellWhichCanMove(t *testing.T) {
	sdbox.RequireRoot(t)
	for script, arg := range map[string]string{"postinstall.sh": "configure 1.0-1", "posttrans.sh": "1"} {
		calls, out, err := runScript(t, script, arg, true, false, true)
		assert.NoError(t, err, "%s: %s", script, out)
		for _, c := range calls {
			assert.NotContains(t, c, "restart", script)
		}
		assert.Contains(t, out, "could not tell which sessions can move (see above), so none was touched", script)
	}
}

// runScript runs a maintainer script in a mount namespace whose /run has
// /run/systemd/system or not, with a systemctl that records its arguments
// and exits 0, or 1 when fail is set, and a shim (/usr/libexec, a tmpfs in
// the namespace) whose upgrade-plan records its arguments and selects vm1
// but not vm2, or fails as without systemd (69) when planFails is set.
func runScript(t *testing.T, script, arg string, systemd, fail, planFails bool) (calls []string, out string, err error) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	status := "0"
	if fail {
		status = "1"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "systemctl"),
		[]byte("#!/bin/sh\necho \"$*\" >>"+log+"\nexit "+status+"\n"), 0o755))
	plan := "echo virtiofsd@vm1.service\necho 'virtiofsd-shim: virtiofsd@vm2.service is left as it is: FRONT=no in /etc/virtiofsd/vm2.conf' >&2\n"
	if planFails {
		plan = "echo 'virtiofsd-shim: cannot reach systemd' >&2\nexit 69\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "virtiofsd-shim"),
		[]byte("#!/bin/sh\necho \"$*\" >>"+log+"\n"+plan), 0o755))
	setup := "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /usr/libexec && cp " + filepath.Join(dir, "virtiofsd-shim") + " /usr/libexec/"
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
