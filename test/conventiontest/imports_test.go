package conventiontest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// suiteImports lists, as "FILE imports PACKAGE", every import of a package
// under test/ that is not shared, by a file outside that package's folder.
// files are by path relative to the root, module is go.mod's module path.
func suiteImports(module string, files map[string]*ast.File) []string {
	var found []string
	for rel, f := range files {
		dir := filepath.ToSlash(filepath.Dir(rel))
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				continue
			}
			pkg, ok := strings.CutPrefix(p, module+"/")
			if !ok || !strings.HasPrefix(pkg, "test/") || pkg == dir || isShared(pkg) {
				continue
			}
			found = append(found, filepath.ToSlash(rel)+" imports "+pkg)
		}
	}
	sort.Strings(found)
	return found
}

// isShared tells whether pkg is in a folder under test/ whose packages
// others may import: the harness (test/testenv/...) or the guest's workload
// (test/guestload, a program the guest runs, which the bench and systemtest
// build).
func isShared(pkg string) bool {
	for _, s := range []string{"test/testenv", "test/guestload"} {
		if pkg == s || strings.HasPrefix(pkg, s+"/") {
			return true
		}
	}
	return false
}

// modulePath reads the module path from go.mod.
func modulePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), "go.mod"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(m)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

// TestSuitesShareTheHarnessAndNeverImportEachOther: what test suites share
// lives in test/testenv; a suite (test/e2etest, test/systemtest, ...) holds
// its tests only, and no other package, suite or product, imports it.
func TestSuitesShareTheHarnessAndNeverImportEachOther(t *testing.T) {
	_, files := goFiles(t, parser.ImportsOnly, func(p string) bool { return true })
	assert.Empty(t, suiteImports(modulePath(t), files),
		"move what these share into test/testenv (a package of its own, or the one that fits), and import that")
}

// The rule catches a suite imported by another suite or by a program, and
// lets through the harness, the guest's workload, and a package's own
// external test.
func TestSuiteImportRuleTellsSharedFromSuites(t *testing.T) {
	const module = "example.org/m"
	src := map[string]string{
		"test/demo/main.go":                     `package main; import "example.org/m/test/e2etest"`,
		"test/bench/migration_test.go":          `package bench; import ("example.org/m/test/migrationtest"; "example.org/m/test/guestload")`,
		"test/systemtest/a_test.go":             `package systemtest; import ("example.org/m/test/testenv/libvirt"; "example.org/m/test/testenv")`,
		"test/libvirttest/x_test.go":            `package libvirttest_test; import "example.org/m/test/libvirttest"`,
		"test/guestload/cmd/guestload/main.go":  `package main; import "example.org/m/test/guestload"`,
		"internal/instances/instances_test.go":  `package instances; import "example.org/m/test/systemtest"`,
		"test/testenvelope/x.go":                `package testenvelope; import "example.org/m/test/testenvelope/y"`,
		"cmd/virtiofsd-shim/main_test.go":       `package main; import ("example.org/m/test/testenv/fakevirtiofsd"; "example.org/m/internal/state")`,
		"test/conventiontest/imports_x_test.go": `package conventiontest; import "example.org/other/test/e2etest"`,
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for name, s := range src {
		f, err := parser.ParseFile(fset, path.Base(name), s, parser.ImportsOnly)
		require.NoError(t, err, name)
		files[filepath.FromSlash(name)] = f
	}
	assert.Equal(t, []string{
		"internal/instances/instances_test.go imports test/systemtest",
		"test/bench/migration_test.go imports test/migrationtest",
		"test/demo/main.go imports test/e2etest",
		"test/testenvelope/x.go imports test/testenvelope/y",
	}, suiteImports(module, files))
}
