package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEachKindOfMutantIsMadeOnceWhereItApplies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.go")
	src := `package x

func f(a, b int) (int, error) {
	var err error
	if a < b && b != 0 {
		a = b
	}
	g()
	return a, err
}

func g() {}
`
	require.NoError(t, os.WriteFile(path, []byte(src), 0o644))
	ms, err := mutantsOf(path)
	require.NoError(t, err)
	var got []string
	for _, m := range ms {
		got = append(got, m.desc)
	}
	assert.ElementsMatch(t, []string{
		"negated condition: if a < b && b != 0",
		"&& -> || in a < b && b != 0",
		"< -> <= in a < b",
		"!= -> == in b != 0",
		"dropped assignment: a = b",
		"dropped statement: g()",
		"returned error made nil: err",
	}, got)
	for _, m := range ms {
		if m.desc == "negated condition: if a < b && b != 0" {
			assert.Contains(t, string(apply([]byte(src), m.edits)), "if !(a < b && b != 0) {")
			assert.Equal(t, 5, m.line)
		}
	}
}

func TestScoresGoIntoTheirSectionAndNowhereElse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "development.md")
	require.NoError(t, os.WriteFile(path, []byte("# Development\n\n## Mutation scores\n\nNotes.\n\n## Next\n\nMore.\n"), 0o644))
	require.NoError(t, writeSection(path, "| one |\n"))
	require.NoError(t, writeSection(path, "| two |\n"))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "# Development\n\n## Mutation scores\n\nNotes.\n\n"+tableBegin+"\n| two |\n"+tableEnd+"\n\n## Next\n\nMore.\n", string(b))

	fresh := filepath.Join(t.TempDir(), "new.md")
	require.NoError(t, writeSection(fresh, "| t |\n"))
	b, err = os.ReadFile(fresh)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "## Mutation scores\n\n"+tableBegin))
}
