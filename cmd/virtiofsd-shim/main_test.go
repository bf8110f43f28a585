package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/fakevirtiofsd"
)

func TestMain(m *testing.M) {
	fakevirtiofsd.Main() // the test binary doubles as a fake virtiofsd
	os.Exit(m.Run())
}

// shim runs one command line in-process and returns its exit status and output.
func shim(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// fakeBinary is a script that execs the test binary as a fake virtiofsd:
// VIRTIOFSD= must be a path, and the flavor comes from the environment.
func fakeBinary(t *testing.T, flavor string) string {
	t.Helper()
	p, err := fakevirtiofsd.Script(t.TempDir(), flavor)
	require.NoError(t, err)
	return p
}

// instance writes a config folder with NAME.conf and returns the folder.
func instance(t *testing.T, name, content string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".conf"), []byte(content), 0o644))
	return dir
}

func TestExitStatusTellsTheCause(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitcode.Usage, "no command given"},
		{"unknown command", []string{"serve"}, exitcode.Usage, `unknown command "serve"`},
		{"unknown flag", []string{"run", "--shared"}, exitcode.Usage, "flag provided but not defined: -shared"},
		{"missing config", []string{"run", "--instance=vm1", "--config-dir=" + t.TempDir()}, exitcode.Config, "vm1.conf: no such file: create it for instance vm1"},
		{"unknown key", []string{"run", "--instance=vm1", "--config-dir=" + instance(t, "vm1", "SHARED_DIR="+share+"\nCACHEMODE=x\n")},
			exitcode.Config, "vm1.conf:2: unknown key CACHEMODE (known: "},
		{"bad instance name", []string{"run", "--instance=../etc", "--config-dir=/tmp"}, exitcode.Config, "instance name"},
		{"bad flag value", []string{"run", "--shared-dir=" + share, "--cache=sometimes"}, exitcode.Config, "--cache: CACHE=sometimes"},
		{"virtiofsd missing", []string{"run", "--shared-dir=" + share, "--virtiofsd=/nonexistent/virtiofsd"}, exitcode.Unavailable,
			"virtiofsd binary /nonexistent/virtiofsd does not exist"},
		{"flavor option refused", []string{"run", "--shared-dir=" + share, "--virtiofsd=" + rust, "--", "--syslog"}, exitcode.Config,
			`extra virtiofsd argument "--syslog" refused`},
		{"option refused in file points at the line", []string{"run", "--instance=vm1", "--config-dir=" + instance(t, "vm1",
			"SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nEXTRA_ARGS=--fd=7\n")}, exitcode.Config, `vm1.conf:3: extra virtiofsd argument "--fd=7" refused`},
		{"no socket", []string{"run", "--shared-dir=" + share, "--virtiofsd=" + rust}, exitcode.Activation, "no socket was passed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LISTEN_FDS", "")
			t.Setenv("LISTEN_PID", "")
			code, _, stderr := shim(t, tc.args...)
			assert.Equal(t, tc.code, code, stderr)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

func TestCheckPrintsTheCommandRunWouldStart(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nCACHE=never\nEXTRA_ARGS=\"--modcaps=-mknod -o 'a b'\"\n")
	code, out, stderr := shim(t, "check", "--config-dir="+dir, "vm1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "Rust virtiofsd 1.13.2")
	assert.Contains(t, out, rust+" --fd=3 --shared-dir="+share+" --cache=never --log-level=info --inode-file-handles=never --modcaps=-mknod -o 'a b'")
	assert.Contains(t, out, "/run/virtiofsd/vm1.sock")

	code, _, stderr = shim(t, "check", "--config-dir="+dir, "vm2")
	assert.Equal(t, exitcode.Config, code)
	assert.Contains(t, stderr, "vm2.conf: no such file")
}

// QEMU 7.2's C virtiofsd is killed by its own seccomp filter as soon as its
// thread pool takes a request (Debian 12, 2026-12-03): check says so, with
// the line, and the Rust virtiofsd gets no such warning.
func TestCheckWarnsOfAThreadPoolForTheCVirtiofsd(t *testing.T) {
	share := t.TempDir()
	for _, flavor := range []string{"c", "rust"} {
		t.Run(flavor, func(t *testing.T) {
			dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+fakeBinary(t, flavor)+"\nTHREAD_POOL_SIZE=4\n")
			code, out, stderr := shim(t, "check", "--config-dir="+dir, "vm1")
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, out, "--thread-pool-size=4")
			if flavor == "c" {
				assert.Contains(t, out, "warning: THREAD_POOL_SIZE=4 with the C virtiofsd 7.2")
				assert.Contains(t, out, "vm1.conf:3): its glib thread pool calls sched_getaffinity")
			} else {
				assert.NotContains(t, out, "THREAD_POOL_SIZE=4 with")
			}
		})
	}
	dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+fakeBinary(t, "c")+"\nTHREAD_POOL_SIZE=0\n")
	_, out, _ := shim(t, "check", "--config-dir="+dir, "vm1")
	assert.NotContains(t, out, "sched_getaffinity", "no pool, no warning")
}

func TestHelpShowsExamplesAndTheExitTable(t *testing.T) {
	code, out, _ := shim(t, "--help")
	assert.Equal(t, 0, code)
	for _, r := range exitcode.Table {
		assert.Contains(t, out, r.Code)
	}
	for _, cmd := range []string{"run", "check", "list", "generate", "release", "standby", "resume", "upgrade-plan"} {
		code, _, stderr := shim(t, cmd, "--help")
		assert.Equal(t, 0, code, cmd)
		assert.Contains(t, stderr, "Examples:", cmd)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := shim(t, "version")
	assert.Equal(t, 0, code)
	assert.Equal(t, "virtiofsd-shim "+version+"\n", out)
}

// docs/operations.md documents the same exit table that --help prints.
func TestDocsHaveTheExitTable(t *testing.T) {
	readme, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	for _, r := range exitcode.Table {
		assert.Contains(t, string(readme), "| "+r.Code+" | "+r.Meaning+" |")
	}
}

func TestCheckShowsTheDropInsAndWhetherADaemonReloadIsPending(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nSOCKET_GROUP=kvm\nSOCKET_MODE=0666\n")
	gen := t.TempDir()
	code, out, stderr := shim(t, "check", "--config-dir="+dir, "--generator-dir="+gen, "vm1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "### "+gen+"/virtiofsd@vm1.socket.d/50-virtiofsd-shim.conf\n")
	assert.Contains(t, out, "[Socket]\nSocketGroup=kvm\nSocketMode=0666\n")
	assert.Contains(t, out, "[Unit]\nRequiresMountsFor="+share+"\n")
	assert.Contains(t, out, "warning: SOCKET_MODE=0666 lets more than the socket's owner and group connect")
	assert.Contains(t, out, "does not exist: systemd has not applied this config yet; run systemctl daemon-reload")

	dir2 := instance(t, "vm2", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nSOCKET_GROUP=nosuchgroup-x\n")
	_, out, _ = shim(t, "check", "--config-dir="+dir2, "--generator-dir="+gen, "vm2")
	assert.Contains(t, out, "warning: SOCKET_GROUP=nosuchgroup-x: no such group")

	// After the generator ran with this config: nothing pending.
	code, _, stderr = shim(t, "generate", "--config-dir="+dir, gen)
	require.Equal(t, 0, code, stderr)
	_, out, _ = shim(t, "check", "--config-dir="+dir, "--generator-dir="+gen, "vm1")
	assert.NotContains(t, out, "warning: "+gen)

	// The config changes: a daemon-reload is pending.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vm1.conf"), []byte("SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\n"), 0o644))
	_, out, _ = shim(t, "check", "--config-dir="+dir, "--generator-dir="+gen, "vm1")
	assert.Contains(t, out, "still has socket settings the config no longer has: run systemctl daemon-reload")
	assert.NotContains(t, out, "SOCKET_MODE")
}

// A config linked to a file that is not a config: check names the link and
// never prints what the file holds.
func TestCheckNeverQuotesAFileThatIsNotAConfig(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	secret := filepath.Join(other, "shadow")
	require.NoError(t, os.WriteFile(secret, []byte("root:$y$j9T$secrethash:19000:0:99999:7:::\n"), 0o640))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "vm1.conf")))
	code, out, stderr := shim(t, "check", "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Config, code)
	assert.Contains(t, stderr, "is a symbolic link to "+secret+", outside "+dir)
	assert.NotContains(t, stderr+out, "secrethash")
	assert.NotContains(t, stderr+out, "root:")

	code, out, stderr = shim(t, "generate", "--dry-run", "--config-dir="+dir)
	assert.Equal(t, 0, code)
	assert.Contains(t, stderr, "skipping virtiofsd@vm1")
	assert.NotContains(t, stderr+out, "secrethash")
}

func TestCheckLibvirtPrintsTheDomainXML(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\n")
	code, out, stderr := shim(t, "check", "--libvirt", "--config-dir="+dir, "vm1")
	require.Equal(t, 0, code, stderr)
	p, err := domainxml.ParseSnippet(out)
	require.NoError(t, err, out)
	assert.Equal(t, domainxml.Filesystem("/run/virtiofsd/vm1.sock", "vm1"), p.Filesystem)
	assert.Equal(t, domainxml.MemoryBacking(), p.MemoryBacking)

	code, out, stderr = shim(t, "check", "--libvirt", "--tag=data", "--config-dir="+dir, "vm1")
	require.Equal(t, 0, code, stderr)
	p, err = domainxml.ParseSnippet(out)
	require.NoError(t, err, out)
	assert.Equal(t, "data", p.Filesystem.Target.Dir)

	// A broken instance gets no XML, only the cause.
	bad := instance(t, "vm2", "SHARED_DIR="+share+"\nCACHE=sometimes\n")
	code, out, stderr = shim(t, "check", "--libvirt", "--config-dir="+bad, "vm2")
	assert.Equal(t, exitcode.Config, code)
	assert.Empty(t, out)
	assert.Contains(t, stderr, "CACHE=sometimes")

	code, _, stderr = shim(t, "check", "--libvirt", "--tag="+strings.Repeat("t", 37), "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Usage, code)
	assert.Contains(t, stderr, "36 bytes")
}

// check shows the new keys as the installed virtiofsd takes them, refuses
// what it cannot honour at the key's line with the versions, and warns of a
// --modcaps capability the unit's bounding set lacks.
func TestCheckShowsAndChecksTheNewKeys(t *testing.T) {
	share := t.TempDir()
	rust := fakeBinary(t, "rust")
	dir := instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nMIGRATION_MODE=file-handles\nPOSIX_ACL=yes\n"+
		"EXTRA_ARGS=--modcaps=+sys_nice\n")
	code, out, stderr := shim(t, "check", "--config-dir="+dir, "--generator-dir="+t.TempDir(), "vm1")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "capabilities  migrate-precopy, separate-options")
	assert.Contains(t, out, "migration     mode file-handles, on error abort (default); CAP_DAC_READ_SEARCH granted by the generator")
	assert.Contains(t, out, "file handles  never (the shim's default, passed explicitly")
	assert.Contains(t, out, "options       POSIX_ACL=always")
	assert.Contains(t, out, "live swap     yes: systemctl reload swaps virtiofsd under a running VM")
	assert.Contains(t, out, "--inode-file-handles=never --migration-mode=file-handles --posix-acl --modcaps=+dac_read_search:+sys_nice")
	assert.Contains(t, out, "CapabilityBoundingSet=CAP_DAC_READ_SEARCH")
	assert.Contains(t, out, "warning: EXTRA_ARGS asks virtiofsd to keep CAP_SYS_NICE (--modcaps), which virtiofsd@vm1.service's bounding set lacks")
	assert.NotContains(t, out, "keep CAP_DAC_READ_SEARCH", "the generator grants that one")

	dir = instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+rust+"\nPOSIX_ACL=auto\n")
	code, _, stderr = shim(t, "check", "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Config, code)
	assert.Contains(t, stderr, "vm1.conf:3: POSIX_ACL=auto needs the Rust virtiofsd 1.14 or later")
	assert.Contains(t, stderr, "found Rust virtiofsd 1.13.2")

	c := fakeBinary(t, "c")
	dir = instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+c+"\nMIGRATION_ON_ERROR=guest-error\n")
	code, _, stderr = shim(t, "check", "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Config, code)
	assert.Contains(t, stderr, "vm1.conf:3: MIGRATION_ON_ERROR= needs the Rust virtiofsd: the C one (QEMU <= 7.2) has no live migration; install the Rust virtiofsd")
}

// The new user: a bad value on line 2 and a typo on line 3 both
// show in one check, each at its line, and the typo names the key meant.
func TestCheckShowsEveryProblemOfAConfigAtItsLine(t *testing.T) {
	dir := instance(t, "vm1", "# vm1\nCACHE=sometimes\nSHARD_DIR=/srv/vm1\n")
	code, out, stderr := shim(t, "check", "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Config, code)
	assert.Empty(t, out)
	conf := filepath.Join(dir, "vm1.conf")
	assert.Contains(t, stderr, conf+":2: CACHE=sometimes: not allowed")
	assert.Contains(t, stderr, "\n"+conf+":3: unknown key SHARD_DIR: did you mean SHARED_DIR?\n")
	assert.NotContains(t, stderr, "known:")
}

func TestCheckJSONGivesEachFindingWithItsKindCodeAndLine(t *testing.T) {
	dir := instance(t, "vm1", "# vm1\nCACHE=sometimes\nSHARD_DIR=/srv/vm1\n")
	code, out, _ := shim(t, "check", "--json", "--config-dir="+dir, "vm1")
	assert.Equal(t, exitcode.Config, code, "the same exit status as the text")
	var r struct {
		Instance string `json:"instance"`
		OK       bool   `json:"ok"`
		Findings []struct {
			Kind, Code, Message, File string
			Line                      int
		} `json:"findings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	assert.Equal(t, "vm1", r.Instance)
	assert.False(t, r.OK)
	require.Len(t, r.Findings, 2)
	assert.Equal(t, "error", r.Findings[0].Kind)
	assert.Equal(t, "bad-value", r.Findings[0].Code)
	assert.Equal(t, 2, r.Findings[0].Line)
	assert.Equal(t, "unknown-key", r.Findings[1].Code)
	assert.Equal(t, 3, r.Findings[1].Line)
	assert.Equal(t, filepath.Join(dir, "vm1.conf"), r.Findings[1].File)

	share := t.TempDir()
	dir = instance(t, "vm1", "SHARED_DIR="+share+"\nVIRTIOFSD="+fakeBinary(t, "rust")+"\nSOCKET_MODE=0666\n")
	code, out, stderr := shim(t, "check", "--json", "--config-dir="+dir, "--generator-dir="+t.TempDir(), "vm1")
	require.Equal(t, 0, code, stderr)
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	assert.True(t, r.OK)
	var kinds []string
	for _, f := range r.Findings {
		kinds = append(kinds, f.Kind+" "+f.Code)
	}
	assert.Contains(t, kinds, "fact shared-dir")
	assert.Contains(t, kinds, "warning socket-mode-wide")
	assert.Equal(t, "fact ready", kinds[len(kinds)-1])
}
