package pkgtest_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// What the packages install, besides directories.
var (
	common = []string{
		"/etc/virtiofsd/example.conf.sample",
		"/usr/lib/systemd/system/virtiofsd@.service",
		"/usr/lib/systemd/system/virtiofsd@.socket",
		"/usr/lib/systemd/system-generators/virtiofsd-shim-generator", // -> ../../../libexec/virtiofsd-shim
		"/usr/lib/systemd/user-generators/virtiofsd-shim-generator",   // -> ../../../libexec/virtiofsd-shim
		"/usr/lib/systemd/user/virtiofsd@.service",
		"/usr/lib/systemd/user/virtiofsd@.socket",
		"/usr/libexec/virtiofsd-shim",
		"/usr/share/doc/virtiofsd-shim/README.md",
		"/usr/share/man/man8/virtiofsd-shim.8.gz",
	}
	debOnly = []string{
		"/etc/apparmor.d/abstractions/libvirt-qemu.d/virtiofsd-shim",
		"/etc/apparmor.d/abstractions/virtiofsd-shim",
		"/usr/share/doc/virtiofsd-shim/changelog.gz",
		"/usr/share/doc/virtiofsd-shim/copyright",
		"/usr/share/lintian/overrides/virtiofsd-shim",
	}
	rpmOnly = []string{
		"/usr/share/licenses/virtiofsd-shim/LICENSE",
		"/usr/share/licenses/virtiofsd-shim/THIRD-PARTY-LICENSES",
	}
)

var (
	workDir   string // under /var/tmp, so a box sees it (its /tmp is private)
	nextOnce  sync.Once
	nextBuilt shimbox.Build
	nextErr   error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("/var/tmp", "pkgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// packages builds the .deb and .rpm of this tree once per test process, as
// `make package` does: the version comes from git.
func packages(t *testing.T) shimbox.Build {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the .deb and .rpm (packaging/build.sh): not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := shimbox.Packages(ctx) // the build the Debian 13 boxes install
	require.NoError(t, err)
	return b
}

// nextBuild builds the same tree as a later version, <version>.1, once per
// test process: what an upgrade installs.
func nextBuild(t *testing.T) shimbox.Build {
	t.Helper()
	b := packages(t)
	nextOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		nextBuilt, nextErr = shimbox.BuildPackages(ctx, testdir.RepoRoot(), filepath.Join(workDir, "next"), b.Version+".1")
	})
	require.NoError(t, nextErr)
	require.NoError(t, exec.Command("dpkg", "--compare-versions", nextBuilt.Version, "gt", b.Version).Run(),
		"%s must sort after %s", nextBuilt.Version, b.Version)
	return nextBuilt
}

// needTools makes sure the named commands exist. scripts/deps.sh (make
// test) installs them: as root a missing one is a missing install step and
// fails the test; without root the test skips, saying why.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs %s, which is missing, and root to install it (scripts/deps.sh)", strings.Join(missing, ", "))
	}
	t.Fatalf("%s missing: run make test, which installs it (scripts/deps.sh)", strings.Join(missing, ", "))
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), rel))
	require.NoError(t, err)
	return string(b)
}

func sorted(lists ...[]string) []string {
	var all []string
	for _, l := range lists {
		all = append(all, l...)
	}
	sort.Strings(all)
	return all
}

func TestVersionSortsUpwardAcrossCommitsTagsAndEdits(t *testing.T) {
	needTools(t, "git", "dpkg", "rpm")
	repo := t.TempDir()
	versionSh := filepath.Join(testdir.RepoRoot(), "packaging", "version.sh")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org",
			"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
		return strings.TrimSpace(string(out))
	}
	version := func() string {
		t.Helper()
		cmd := exec.Command(versionSh)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "version.sh: %s", out)
		return strings.TrimSpace(string(out))
	}
	commit := func(content string) string {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(repo, "f"), []byte(content), 0o644))
		git("add", "f")
		git("commit", "-q", "-m", content)
		return git("rev-parse", "--short=7", "HEAD")
	}
	git("init", "-q")

	type step struct{ what, version string }
	var steps []step
	add := func(what, want string) {
		t.Helper()
		got := version()
		assert.Equal(t, want, got, what)
		steps = append(steps, step{what, got})
	}
	sha := commit("1")
	add("first commit, no tag", "0.0.0+git1."+sha)
	sha = commit("2")
	add("second commit", "0.0.0+git2."+sha)
	require.NoError(t, os.WriteFile(filepath.Join(repo, "f"), []byte("edited"), 0o644))
	add("uncommitted edit", "0.0.0+git2."+sha+".dirty")
	for i := 3; i <= 10; i++ {
		sha = commit(fmt.Sprint(i))
	}
	add("tenth commit", "0.0.0+git10."+sha)
	git("tag", "v0.1.0")
	add("tag v0.1.0", "0.1.0")
	sha = commit("11")
	add("commit after v0.1.0", "0.1.0+git1."+sha)
	commit("12")
	git("tag", "v0.2.0-rc1")
	add("tag v0.2.0-rc1", "0.2.0~rc1")
	commit("13")
	git("tag", "v0.2.0")
	add("tag v0.2.0", "0.2.0")

	for i := 1; i < len(steps); i++ {
		a, b := steps[i-1], steps[i]
		assert.NoError(t, exec.Command("dpkg", "--compare-versions", a.version, "lt", b.version).Run(),
			"dpkg: %s (%s) must sort before %s (%s)", a.version, a.what, b.version, b.what)
		out := run(t, "rpm", "--eval", fmt.Sprintf("%%{lua:print(rpm.vercmp(%q, %q))}", a.version, b.version))
		assert.Equal(t, "-1", strings.TrimSpace(out),
			"rpm: %s (%s) must sort before %s (%s)", a.version, a.what, b.version, b.what)
	}
}

func TestBuildStampsTheGitVersionIntoTheBinary(t *testing.T) {
	needTools(t, "dpkg-deb")
	b := packages(t)
	cmd := exec.Command(filepath.Join(testdir.RepoRoot(), "packaging", "version.sh"))
	cmd.Dir = testdir.RepoRoot()
	want, err := cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(want)), b.Version)
	assert.Equal(t, "virtiofsd-shim_"+b.Version+"_amd64.deb", filepath.Base(b.Deb))
	assert.Equal(t, "virtiofsd-shim-"+b.Version+"-1.x86_64.rpm", filepath.Base(b.RPM))
	assert.Equal(t, "virtiofsd-shim "+b.Version+"\n", run(t, b.Bin, "version"))
}

// lintianLine is one line of lintian's output: "E: pkg: tag [context]".
var lintianLine = regexp.MustCompile(`^([EWIPXCNO]): virtiofsd-shim: (\S+)(.*)$`)

func TestDebHasNoLintianErrorsOrWarnings(t *testing.T) {
	needTools(t, "lintian")
	b := packages(t)
	cmd := exec.Command("lintian", "--pedantic", "--display-info", "--show-overrides", "--no-tag-display-limit", b.Deb)
	out, _ := cmd.CombinedOutput() // its exit status counts overridden tags too: read the lines
	readme := readRepoFile(t, "packaging/README.md")
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := lintianLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		switch m[1] {
		case "E", "W":
			t.Errorf("lintian: %s", sc.Text())
		case "O":
			assert.Contains(t, readme, "`"+m[2]+"`", "overridden lintian tag %s must be justified in packaging/README.md", m[2])
			t.Logf("lintian (overridden, see packaging/README.md): %s", sc.Text())
		default:
			t.Logf("lintian: %s", sc.Text())
		}
	}
	require.NoError(t, cmd.Err)
}

func TestDebHoldsTheFilesDependenciesAndScripts(t *testing.T) {
	needTools(t, "dpkg-deb")
	b := packages(t)

	var files []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", b.Deb)), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(f[0], "d") {
			continue
		}
		name := f[len(f)-1]
		if len(f) > 2 && f[len(f)-2] == "->" { // a symbolic link: NAME -> TARGET
			name = f[len(f)-3]
		}
		files = append(files, strings.TrimPrefix(name, "."))
	}
	sort.Strings(files)
	assert.Equal(t, sorted(common, debOnly), files)
	for _, scope := range []string{"system", "user"} {
		assert.Contains(t, run(t, "dpkg-deb", "--contents", b.Deb),
			" ./usr/lib/systemd/"+scope+"-generators/virtiofsd-shim-generator -> ../../../libexec/virtiofsd-shim\n", "the %s generator is the shim", scope)
	}
	assert.Contains(t, run(t, "dpkg-deb", "--contents", b.Deb), "drwxr-xr-x root/root         0 ", "directories are root's, 0755")

	assert.Equal(t, "systemd, virtiofsd | qemu-system-common (<< 1:8.0)\n", run(t, "dpkg-deb", "--field", b.Deb, "Depends"))
	assert.Equal(t, "/etc/apparmor.d/abstractions/libvirt-qemu.d/virtiofsd-shim\n/etc/apparmor.d/abstractions/virtiofsd-shim\n/etc/virtiofsd/example.conf.sample\n",
		run(t, "dpkg-deb", "--info", b.Deb, "conffiles"))
	for deb, src := range map[string]string{"postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh"} {
		assert.Equal(t, readRepoFile(t, "packaging/scripts/"+src), run(t, "dpkg-deb", "--info", b.Deb, deb), deb)
	}
	assert.NotContains(t, run(t, "dpkg-deb", "--info", b.Deb), " preinst", "no preinst")

	root := t.TempDir()
	run(t, "dpkg-deb", "--extract", b.Deb, root)
	assert.Equal(t, "virtiofsd-shim "+b.Version+"\n", run(t, filepath.Join(root, "usr/libexec/virtiofsd-shim"), "version"))
	for _, unit := range []string{"virtiofsd@.socket", "virtiofsd@.service"} {
		got, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system", unit))
		require.NoError(t, err)
		assert.Equal(t, readRepoFile(t, "units/"+unit), string(got), "the package ships units/%s as it is", unit)
		got, err = os.ReadFile(filepath.Join(root, "usr/lib/systemd/user", unit))
		require.NoError(t, err)
		assert.Equal(t, readRepoFile(t, "units/user/"+unit), string(got), "the package ships units/user/%s as it is", unit)
	}
	man := run(t, "sh", "-c", "zcat "+filepath.Join(root, "usr/share/man/man8/virtiofsd-shim.8.gz"))
	assert.Regexp(t, `(?m)^\.TH VIRTIOFSD-SHIM 8 "\d{4}-\d\d-\d\d" "virtiofsd-shim `+regexp.QuoteMeta(b.Version)+`"`, man,
		"the man page carries the commit's date and the version")
	copyright, err := os.ReadFile(filepath.Join(root, "usr/share/doc/virtiofsd-shim/copyright"))
	require.NoError(t, err)
	deps := run(t, "go", "list", "-C", testdir.RepoRoot(), "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", "./cmd/virtiofsd-shim")
	for _, mod := range strings.Fields(deps) {
		assert.Contains(t, string(copyright), "Files: vendor/"+mod+"/*", "the copyright file names each module linked in")
	}
}

func TestRPMHoldsTheFilesDependenciesAndScripts(t *testing.T) {
	needTools(t, "rpm")
	b := packages(t)

	assert.Equal(t, b.Version+"-1 x86_64", run(t, "rpm", "-qp", "--qf", "%{VERSION}-%{RELEASE} %{ARCH}", b.RPM))
	var files []string
	flags := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "rpm", "-qp", "--qf", `[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]`, b.RPM)), "\n") {
		f := strings.Fields(line)
		if strings.HasPrefix(f[0], "d") {
			continue
		}
		files = append(files, f[len(f)-1])
		flags[f[len(f)-1]] = f[0] + " " + f[1]
	}
	sort.Strings(files)
	assert.Equal(t, sorted(common, rpmOnly), files, "rpm -qpl")
	assert.Equal(t, "-rw-r--r-- cn", flags["/etc/virtiofsd/example.conf.sample"], "config(noreplace)")
	assert.True(t, strings.HasPrefix(flags["/usr/libexec/virtiofsd-shim"], "-rwxr-xr-x "), flags["/usr/libexec/virtiofsd-shim"])
	assert.Equal(t, "-rw-r--r-- d", flags["/usr/share/doc/virtiofsd-shim/README.md"], "%%doc")
	assert.Equal(t, "-rw-r--r-- l", flags["/usr/share/licenses/virtiofsd-shim/LICENSE"], "%%license")
	assert.Contains(t, run(t, "rpm", "-qpl", b.RPM), "/etc/virtiofsd\n", "the package owns /etc/virtiofsd")

	requires := strings.Fields(run(t, "rpm", "-qpR", b.RPM))
	assert.Subset(t, requires, []string{"systemd", "virtiofsd"})

	scripts := run(t, "rpm", "-qp", "--scripts", b.RPM)
	for _, s := range []struct{ rpm, src string }{
		{"postinstall", "postinstall.sh"}, {"preuninstall", "preremove.sh"}, {"postuninstall", "postremove.sh"},
	} {
		assert.Contains(t, scripts, s.rpm+" scriptlet (using /bin/sh):\n"+readRepoFile(t, "packaging/scripts/"+s.src))
	}
	assert.NotContains(t, scripts, "preinstall scriptlet")
}

func TestManPageRendersCleanlyAndCoversExitStatusAndTheExampleEveryKey(t *testing.T) {
	needTools(t, "man")
	page := filepath.Join(testdir.RepoRoot(), "packaging", "virtiofsd-shim.8")
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	text, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	assert.Empty(t, stderr.String(), "man --warnings")

	roff := readRepoFile(t, "packaging/virtiofsd-shim.8")
	sample := readRepoFile(t, "packaging/example.conf.sample")
	// test/docstest checks that the man page documents every key.
	for _, key := range config.Keys() {
		assert.Regexp(t, `(?m)^#?`+key+`=`, sample, "example.conf.sample: config key %s", key)
	}
	for _, row := range exitcode.Table {
		assert.Contains(t, roff, "\n.B "+strings.ReplaceAll(row.Code, "-", `\-`)+"\n", "man page: exit status %s", row.Code)
	}
	for _, cmd := range []string{"run", "check", "list", "version"} {
		assert.Regexp(t, `(?m)^\.BI? `+cmd+`\b`, roff, "man page: command %s", cmd)
	}
	for _, field := range []string{"SYSLOG_IDENTIFIER=virtiofsd", "VIRTIOFSD_INSTANCE=", "VIRTIOFSD_PID=", "PRIORITY", "VIRTIOFSD_DROPPED="} {
		assert.Contains(t, string(text), field, "man page: journal field")
	}
}

// The example config, with every commented KEY= line enabled, is a valid
// instance config once SHARED_DIR points at a real directory.
func TestExampleConfigIsValidWithEveryKeyEnabled(t *testing.T) {
	b := packages(t)
	if _, err := os.Stat("/usr/lib/qemu/virtiofsd"); err != nil {
		// make test installs it (scripts/deps.sh): its absence is a missing install step.
		t.Fatalf("needs the C virtiofsd at /usr/lib/qemu/virtiofsd (qemu-system-common), which the example names: %v", err)
	}
	dir, share := t.TempDir(), t.TempDir()
	conf := enableEveryKey(readRepoFile(t, "packaging/example.conf.sample"), share)
	conf, refused := withoutRustOnlyKeys(t, b.Bin, dir, conf)
	out, err := exec.Command(b.Bin, "check", "--config-dir="+dir, "example").CombinedOutput()
	assert.NoError(t, err, "the example without the Rust-only keys %v:\n%s\n%s", refused, out, conf)
	assert.Contains(t, refused, "MIGRATION_MODE", "the C virtiofsd has no migration")
}

// enableEveryKey turns the example config into one that sets every key a
// system instance may set (the user-only ones stay commented out), sharing
// share.
// withoutRustOnlyKeys takes out of conf, written as DIR/example.conf, each
// key that bin's check refuses for the host's C virtiofsd because only the
// Rust one has it (at its line, naming the package to install), one by one,
// and returns the rest with the keys taken out.
func withoutRustOnlyKeys(t *testing.T, bin, dir, conf string) (string, []string) {
	t.Helper()
	path := filepath.Join(dir, "example.conf")
	lineOf := regexp.MustCompile(`example\.conf:(\d+): ([A-Z_]+)= needs the Rust virtiofsd: .*apt install virtiofsd`)
	var refused []string
	for range 40 {
		require.NoError(t, os.WriteFile(path, []byte(conf), 0o644))
		out, err := exec.Command(bin, "check", "--config-dir="+dir, "example").CombinedOutput()
		m := lineOf.FindStringSubmatch(string(out))
		if err == nil || m == nil {
			break
		}
		n, _ := strconv.Atoi(m[1])
		lines := strings.SplitAfter(conf, "\n")
		require.True(t, strings.HasPrefix(lines[n-1], m[2]+"="), "line %d is %q", n, lines[n-1])
		lines[n-1] = "#" + lines[n-1]
		conf = strings.Join(lines, "")
		refused = append(refused, m[2])
	}
	return conf, refused
}

func enableEveryKey(sample, share string) string {
	var conf strings.Builder
	for _, line := range strings.SplitAfter(sample, "\n") {
		key, _, _ := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		switch {
		case strings.HasPrefix(line, "SHARED_DIR="):
			line = "SHARED_DIR=" + share + "\n"
		case regexp.MustCompile(`^#[A-Z_]+=`).MatchString(line) && config.System.Allows(key):
			line = line[1:]
		}
		conf.WriteString(line)
	}
	return conf.String()
}

func TestShellScriptsPassShellcheck(t *testing.T) {
	needTools(t, "shellcheck")
	scripts, err := filepath.Glob(filepath.Join(testdir.RepoRoot(), "packaging", "*.sh"))
	require.NoError(t, err)
	more, err := filepath.Glob(filepath.Join(testdir.RepoRoot(), "packaging", "scripts", "*.sh"))
	require.NoError(t, err)
	require.NotEmpty(t, more)
	out, err := exec.Command("shellcheck", append([]string{"--shell=sh"}, append(scripts, more...)...)...).CombinedOutput()
	assert.NoError(t, err, "%s", out)
}

// The rpm installs, upgrades and erases with rpm itself, into a scratch
// root (scriptlets off: they need a shell in that root, and are tested on
// their own): the files and modes land, a config the admin edited survives
// the upgrade (noreplace) and is kept as .rpmsave on erase, and nothing else
// is left.
func TestRPMInstallsUpgradesAndErasesInAScratchRoot(t *testing.T) {
	sdbox.RequireRoot(t) // rpm sets owners
	needTools(t, "rpm")
	b := packages(t)
	newer := nextBuild(t)
	root := t.TempDir()
	rpm := func(args ...string) string {
		t.Helper()
		return run(t, "rpm", append([]string{"--root=" + root, "--dbpath=/var/lib/rpm"}, args...)...)
	}
	rpm("--initdb")
	rpm("-i", "--nodeps", "--noscripts", b.RPM)
	for _, f := range sorted(common, rpmOnly) {
		_, err := os.Stat(filepath.Join(root, f))
		assert.NoError(t, err, f)
	}
	assert.Equal(t, "virtiofsd-shim "+b.Version+"\n", run(t, filepath.Join(root, "usr/libexec/virtiofsd-shim"), "version"))
	assert.Equal(t, "virtiofsd-shim-"+b.Version+"-1.x86_64\n", rpm("-q", "virtiofsd-shim"))

	example := filepath.Join(root, "etc/virtiofsd/example.conf.sample")
	edited := []byte("# edited by the admin\n")
	require.NoError(t, os.WriteFile(example, edited, 0o644))
	rpm("-U", "--nodeps", "--noscripts", newer.RPM)
	assert.Equal(t, "virtiofsd-shim "+newer.Version+"\n", run(t, filepath.Join(root, "usr/libexec/virtiofsd-shim"), "version"))
	got, err := os.ReadFile(example)
	require.NoError(t, err)
	assert.Equal(t, edited, got, "noreplace: the upgrade keeps the admin's edit")

	rpm("-e", "--nodeps", "--noscripts", "virtiofsd-shim")
	var left []string
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(p, filepath.Join(root, "var/lib/rpm")) {
			return err // the rpm database
		}
		left = append(left, strings.TrimPrefix(p, root))
		return nil
	}))
	assert.Equal(t, []string{"/etc/virtiofsd/example.conf.sample.rpmsave"}, left, "erase leaves only the edited config, saved")
}
