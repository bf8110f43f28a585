// Package conventiontest checks conventions of the test code that go vet
// and staticcheck do not: how tests wait for a condition, and that test
// suites share the harness (test/testenv) rather than import each other.
package conventiontest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// goFiles parses the repository's Go files whose names match keep, as far
// as mode says (0: whole files), by their paths relative to the root.
func goFiles(t *testing.T, mode parser.Mode, keep func(path string) bool) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	root := testdir.RepoRoot()
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || !keep(path) {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, mode)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files[rel] = f
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return fset, files
}

// TestConditionsNeverRequire: the condition of testify's Eventually,
// EventuallyWithT and Never runs on another goroutine, where require's
// t.FailNow does not stop the test. A condition reports through its
// *assert.CollectT (or its result), so it never calls require, nor passes
// the test's t to a helper (which may call require).
func TestConditionsNeverRequire(t *testing.T) {
	fset, files := goFiles(t, 0, func(string) bool { return true })
	var found []string
	for rel, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !strings.HasPrefix(sel.Sel.Name, "Eventually") && sel.Sel.Name != "Never" {
				return true
			}
			for _, a := range call.Args {
				cond, ok := a.(*ast.FuncLit)
				if !ok {
					continue
				}
				ast.Inspect(cond.Body, func(m ast.Node) bool {
					c, ok := m.(*ast.CallExpr)
					if !ok {
						return true
					}
					at := fmt.Sprintf("%s:%d", rel, fset.Position(c.Pos()).Line)
					if s, ok := c.Fun.(*ast.SelectorExpr); ok {
						if x, ok := s.X.(*ast.Ident); ok && x.Name == "require" {
							found = append(found, at+": require."+s.Sel.Name+" in a condition")
						}
					}
					for _, arg := range c.Args {
						if id, ok := arg.(*ast.Ident); ok && id.Name == "t" {
							found = append(found, at+": the test's t passed to a helper in a condition")
						}
					}
					return true
				})
			}
			return true
		})
	}
	assert.Empty(t, found, "use the condition's *assert.CollectT, and helpers that return errors")
}

// TestTestsPollWithEventually: a test that waits for a condition uses
// testify's Eventually or EventuallyWithT, with a generous bound, rather
// than a loop around time.Sleep of its own. test/bench is left out: it
// measures, polling at the pace its measurements need, and asserts on no
// result.
func TestTestsPollWithEventually(t *testing.T) {
	bench := string(filepath.Separator) + filepath.Join("test", "bench") + string(filepath.Separator)
	fset, files := goFiles(t, 0, func(path string) bool {
		return strings.HasSuffix(path, "_test.go") && !strings.Contains(path, bench)
	})
	var found []string
	for rel, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			loop, ok := n.(*ast.ForStmt)
			if !ok {
				return true
			}
			sleeps := false
			ast.Inspect(loop, func(m ast.Node) bool {
				if c, ok := m.(*ast.CallExpr); ok {
					if s, ok := c.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == "Sleep" {
						if x, ok := s.X.(*ast.Ident); ok && x.Name == "time" {
							sleeps = true
						}
					}
				}
				return !sleeps
			})
			if sleeps {
				found = append(found, fmt.Sprintf("%s:%d", rel, fset.Position(loop.Pos()).Line))
			}
			return true
		})
	}
	assert.Empty(t, found, "loops around time.Sleep in tests: poll with require.Eventually or EventuallyWithT")
}
