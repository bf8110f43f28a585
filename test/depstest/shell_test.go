package depstest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func programsOf(uses []Use) []string {
	var out []string
	for _, u := range uses {
		out = append(out, u.Program+"@"+u.Where)
	}
	return out
}

func TestShellProgramsFindsEachCommandOnce(t *testing.T) {
	script := `#!/bin/sh
# comment: notacommand here
set -eu
x=$(one a b | two) y="$(three "$(four)")"
five >&2 2>/dev/null && six || seven; eight ${V:-$(nine)}
for f in ten eleven; do twelve "$f"; done
case "$x" in
*-dirty) thirteen ;;
esac
command -v fourteen >/dev/null
env A=1 fifteen
VAR=1 sixteen
cat >"$out" <<'EOF2'
notrun either
EOF2
myfunc() { echo "$1"; }
myfunc x
scripts/own.sh arg
packages=(
	pkg-a   # a comment
	pkg-b
)
n=$((n+1))
awk '{ print "x" }' | seventeen
`
	assert.Equal(t, []string{
		"one@s:4", "two@s:4", "three@s:4", "four@s:4",
		"five@s:5", "six@s:5", "seven@s:5", "eight@s:5", "nine@s:5",
		"twelve@s:6", "thirteen@s:8", "fourteen@s:10", "fifteen@s:11", "sixteen@s:12",
		"cat@s:13", "awk@s:24", "seventeen@s:24",
	}, programsOf(ShellPrograms("s", script)))
}

func TestMakefileProgramsReadsRecipesAndShellCalls(t *testing.T) {
	makefile := "VERSION ?= $(shell tool-a 2>/dev/null || echo dev)\n" +
		"GO ?= go\n" +
		"build:\n" +
		"\t$(GO) build ./...\n" +
		"\t@out=$$(gofmt -l .); [ -z \"$$out\" ]\n" +
		"\t-systemctl --root=$(or $(DESTDIR),/) disable x\n"
	assert.Equal(t, []string{"tool-a@M:1", "go@M:4", "gofmt@M:5", "systemctl@M:6"},
		programsOf(MakefilePrograms("M", makefile)))
}
