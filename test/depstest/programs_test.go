package depstest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// packageOf names the Debian 12 package of each program the sources run.
// The test checks every entry against `dpkg -S` where the program is
// installed; the table is what names the package where it is not.
var packageOf = map[string]string{
	"/bin/sh": "dash", "sh": "dash", "awk": "mawk",
	"basename": "coreutils", "cat": "coreutils", "chmod": "coreutils", "chown": "coreutils",
	"cp": "coreutils", "date": "coreutils", "dirname": "coreutils", "env": "coreutils",
	"head": "coreutils", "id": "coreutils", "install": "coreutils", "ln": "coreutils",
	"ls": "coreutils", "mkdir": "coreutils", "mktemp": "coreutils", "rm": "coreutils",
	"sleep": "coreutils", "sort": "coreutils", "stat": "coreutils", "test": "coreutils", "timeout": "coreutils",
	"tr":   "coreutils",
	"grep": "grep", "sed": "sed", "gzip": "gzip", "getent": "libc-bin", "logger": "bsdutils",
	"apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", "dpkg-deb": "dpkg", "dpkg-query": "dpkg",
	"useradd": "passwd", "usermod": "passwd",
	"nsenter": "util-linux", "unshare": "util-linux", "setpriv": "util-linux",
	"pgrep": "procps", "pkill": "procps", "ps": "procps", "kill": "procps", "hostname": "hostname",
	"systemctl": "systemd", "journalctl": "systemd", "systemd-analyze": "systemd",
	"systemd-socket-activate": "systemd", "systemd-stdio-bridge": "systemd",
	"depmod": "kmod", "cpio": "cpio", "xz": "xz-utils", "zstd": "zstd", "busybox": "busybox-static",
	"git": "git", "man": "man-db", "lintian": "lintian", "shellcheck": "shellcheck",
	"mmdebstrap": "mmdebstrap", "newuidmap": "uidmap",
	"qemu-system-x86_64": "qemu-system-x86",
	"virsh":              "libvirt-clients", "libvirtd": "libvirt-daemon", "/usr/sbin/libvirtd": "libvirt-daemon",
}

// notFromDebian12 are programs no Debian 12 package of deps.sh brings,
// each with the reason it needs none.
var notFromDebian12 = map[string]string{
	"go":                          "Go 1.26 in /usr/local/go: deps.sh checks for it and says how to install it (Debian 12's golang-go is too old)",
	"gofmt":                       "comes with go (make lint)",
	"virtiofsd":                   "the Rust virtiofsd, run inside the Debian 13 tree (test/testenv/distro) that mmdebstrap builds with it",
	"/usr/libexec/virtiofsd-shim": "the product itself, installed into a test box",
	"perf":                        "make bench only, which says \"Not measured\" without it (linux-perf)",
}

// TestEveryProgramComesFromDebiansMinimalSystemOrDepsSh: every program the
// product, its tests, scripts and Makefile run comes with a fresh Debian 12
// machine (an Essential package, or one of priority required) or with a
// package that scripts/deps.sh installs (or one those depend on). A
// program that does not is named with its package, so that it can be
// added to deps.sh.
func TestEveryProgramComesFromDebiansMinimalSystemOrDepsSh(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian system (no dpkg-query): the programs' packages cannot be checked here")
	}
	root := testdir.RepoRoot()
	uses, err := Programs(root)
	require.NoError(t, err)
	require.NotEmpty(t, uses)
	where := map[string][]string{}
	for _, u := range uses {
		where[u.Program] = append(where[u.Program], u.Where)
	}

	deps, err := depsPackages(filepath.Join(root, "scripts", "deps.sh"))
	require.NoError(t, err)
	db := readDpkg(t)
	brought := db.closure(deps)

	programs := make([]string, 0, len(where))
	for p := range where {
		programs = append(programs, p)
	}
	sort.Strings(programs)
	owners := dpkgOwners(programs)
	require.Equal(t, "dash", owners["sh"], "dpkg -S finds the owner of sh")
	for _, p := range programs {
		at := strings.Join(where[p], ", ")
		if _, ok := notFromDebian12[p]; ok {
			continue
		}
		pkg, ok := packageOf[p]
		if !assert.True(t, ok, "%s (run at %s) is not in packageOf: add it with its Debian package (dpkg -S $(command -v %s))", p, at, p) {
			continue
		}
		if owner := owners[p]; owner != "" {
			assert.Equal(t, owner, pkg, "%s: packageOf says %s, dpkg -S says %s", p, pkg, owner)
		}
		if brought[pkg] || db.minimal(pkg) {
			continue
		}
		t.Errorf("%s (run at %s) comes from the Debian package %s, which is neither Essential nor of priority required, and scripts/deps.sh does not install it: add %s to scripts/deps.sh", p, at, pkg, pkg)
	}
	for p := range packageOf {
		if _, ok := where[p]; !ok {
			t.Errorf("packageOf names %s, which nothing runs any more: remove it", p)
		}
	}
	for p := range notFromDebian12 {
		if _, ok := where[p]; !ok {
			t.Errorf("notFromDebian12 names %s, which nothing runs any more: remove it", p)
		}
	}
}

// depsPackages reads the package names of deps.sh's packages=( ... ) list.
func depsPackages(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := regexp.MustCompile(`(?s)\npackages=\((.*?)\n\)`).FindSubmatch(b)
	if m == nil {
		return nil, os.ErrNotExist
	}
	var pkgs []string
	for _, line := range strings.Split(string(m[1]), "\n") {
		line, _, _ = strings.Cut(line, "#")
		pkgs = append(pkgs, strings.Fields(line)...)
	}
	return pkgs, nil
}

// dpkgOwners maps each installed program of programs to the package that
// owns it, per one dpkg -S (through symbolic links, /usr-merged paths and
// alternatives); programs not installed here are left out.
func dpkgOwners(programs []string) map[string]string {
	candidates := map[string][]string{}
	var all []string
	for _, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		c := []string{path}
		if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
			c = append(c, real)
		}
		for _, x := range append([]string(nil), c...) {
			if rest, ok := strings.CutPrefix(x, "/usr"); ok {
				c = append(c, rest)
			}
		}
		candidates[p] = c
		all = append(all, c...)
	}
	// dpkg -S exits 1 when some path is nobody's; its output still holds the others.
	out, _ := exec.Command("dpkg", append([]string{"-S"}, all...)...).Output()
	owner := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "diversion by ") {
			continue
		}
		if pkgs, file, ok := strings.Cut(line, ": "); ok {
			pkg, _, _ := strings.Cut(strings.Split(pkgs, ", ")[0], ":")
			owner[file] = pkg
		}
	}
	found := map[string]string{}
	for p, c := range candidates {
		for _, x := range c {
			if pkg, ok := owner[x]; ok {
				found[p] = pkg
				break
			}
		}
	}
	return found
}

// dpkgDB is what dpkg knows of the installed packages.
type dpkgDB struct {
	essential, required map[string]bool
	depends             map[string][]string // package -> what it Depends/Pre-Depends on, alternatives included
	providers           map[string][]string // virtual package -> packages that provide it
}

func readDpkg(t *testing.T) *dpkgDB {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\t${Provides}\t${db:Status-Status}\n").Output()
	require.NoError(t, err)
	db := &dpkgDB{essential: map[string]bool{}, required: map[string]bool{}, depends: map[string][]string{}, providers: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 || f[5] != "installed" {
			continue
		}
		pkg := f[0]
		db.essential[pkg] = f[1] == "yes"
		db.required[pkg] = f[2] == "required"
		db.depends[pkg] = packageNames(f[3])
		for _, v := range packageNames(f[4]) {
			db.providers[v] = append(db.providers[v], pkg)
		}
	}
	require.NoError(t, sc.Err())
	return db
}

// packageNames reads the names of a Depends-style field:
// "a (>= 1), b | c:any, d".
func packageNames(field string) []string {
	var out []string
	for _, dep := range strings.Split(field, ",") {
		for _, alt := range strings.Split(dep, "|") {
			name := strings.Fields(alt)
			if len(name) == 0 {
				continue
			}
			n, _, _ := strings.Cut(name[0], ":")
			out = append(out, n)
		}
	}
	return out
}

// closure is pkgs and everything installed they depend on.
func (db *dpkgDB) closure(pkgs []string) map[string]bool {
	seen := map[string]bool{}
	queue := append([]string(nil), pkgs...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		queue = append(queue, db.depends[p]...)
		queue = append(queue, db.providers[p]...)
	}
	return seen
}

// minimal tells whether pkg is part of Debian's minimal system: Essential,
// or of priority required. For a package not installed here, apt-cache
// show says.
func (db *dpkgDB) minimal(pkg string) bool {
	if _, installed := db.essential[pkg]; installed {
		return db.essential[pkg] || db.required[pkg]
	}
	out, err := exec.Command("apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return false
	}
	return regexp.MustCompile(`(?m)^(Essential: yes|Priority: required)$`).Match(out)
}
