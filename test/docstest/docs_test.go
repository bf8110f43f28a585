// Package docstest checks the documentation against itself and the code,
// without root: every relative link of README.md and docs/*.md leads to a
// file and heading that exist, the README stays short and links every page,
// and the reference, virtiofsd-shim(8), documents every config key.
package docstest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// repoRoot is the top of the tree, seen from this package's folder, where
// go test runs.
const repoRoot = "../.."

// manPage is the reference for the command and its keys.
const manPage = "packaging/virtiofsd-shim.8"

// readmeMaxLines is how long README.md may grow (issue 26: a newcomer reads
// it in ten minutes).
const readmeMaxLines = 300

// docFiles returns README.md and every docs/*.md, relative to the top.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	require.NoError(t, err)
	files := []string{"README.md"}
	for _, p := range pages {
		rel, err := filepath.Rel(repoRoot, p)
		require.NoError(t, err)
		files = append(files, rel)
	}
	return files
}

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	require.NoError(t, err)
	return string(b)
}

func TestEveryRelativeDocLinkResolves(t *testing.T) {
	anchors := map[string]map[string]bool{}
	anchorsOf := func(rel string) map[string]bool {
		if a, ok := anchors[rel]; ok {
			return a
		}
		anchors[rel] = Anchors(read(t, rel))
		return anchors[rel]
	}
	for _, file := range docFiles(t) {
		for _, l := range Links(read(t, file)) {
			if l.External() {
				continue
			}
			path, frag, _ := strings.Cut(l.Target, "#")
			target := file
			if path != "" {
				target = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(filepath.Join(repoRoot, target)); err != nil {
					t.Errorf("%s:%d: link %q: no such file or folder %s", file, l.Line, l.Target, target)
					continue
				}
			}
			if frag == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				t.Errorf("%s:%d: link %q: an anchor into a file that is not Markdown", file, l.Line, l.Target)
				continue
			}
			if !anchorsOf(target)[frag] {
				t.Errorf("%s:%d: link %q: %s has no heading with anchor #%s", file, l.Line, l.Target, target, frag)
			}
		}
	}
}

func TestREADMEIsShortAndLinksEveryDocsPage(t *testing.T) {
	readme := read(t, "README.md")
	n := strings.Count(readme, "\n")
	assert.LessOrEqual(t, n, readmeMaxLines, "README.md has %d lines; move detail into docs/", n)
	linked := map[string]bool{}
	for _, l := range Links(readme) {
		path, _, _ := strings.Cut(l.Target, "#")
		linked[filepath.Clean(path)] = true
	}
	for _, f := range docFiles(t) {
		if f != "README.md" {
			assert.True(t, linked[f], "README.md does not link %s", f)
		}
	}
}

// manKeyTerm is a key as the man page's CONFIGURATION section names it: a
// bold term of its own line.
var manKeyTerm = regexp.MustCompile(`^\.B ([A-Z][A-Z0-9_]+)$`)

func TestManPageDocumentsEveryConfigKey(t *testing.T) {
	documented := map[string]bool{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(read(t, manPage)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, ".SH ") {
			in = line == ".SH CONFIGURATION"
			continue
		}
		if m := manKeyTerm.FindStringSubmatch(line); in && m != nil {
			documented[m[1]] = true
		}
	}
	keys := config.Keys()
	for _, k := range keys {
		assert.True(t, documented[k], "%s, section CONFIGURATION, does not document the key %s", manPage, k)
	}
	for k := range documented {
		assert.True(t, slices.Contains(keys, k), "%s documents %s, which the config parser does not know", manPage, k)
	}
	assert.True(t, strings.Contains(read(t, "docs/configuration.md"), "virtiofsd-shim(8)"), "docs/configuration.md points to the reference, virtiofsd-shim(8)")
}
