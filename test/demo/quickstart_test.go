package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fencedBlocks returns the fenced code blocks of a Markdown section, each as
// its lines.
func fencedBlocks(section string) [][]string {
	var blocks [][]string
	var cur []string
	in := false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, "```"):
			if in {
				blocks = append(blocks, cur)
				cur = nil
			}
			in = !in
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

func argvs(cmds []command) []string {
	var lines []string
	for _, c := range cmds {
		lines = append(lines, strings.Join(c.argv, " "))
	}
	return lines
}

// A reader who follows the README's quick start types what make demo runs:
// the same config, and the same commands before and after the VM.
func TestREADMEQuickStartIsTheDemos(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	require.True(t, ok, "README.md has a Quick start section")
	section, _, _ = strings.Cut(section, "\n## ")

	qs := theQuickStart()
	confHeader := "# /etc/virtiofsd/" + qs.instance + ".conf"
	blocks := fencedBlocks(section)
	at := -1
	for i, b := range blocks {
		if len(b) > 0 && b[0] == confHeader {
			at = i
		}
	}
	require.True(t, at >= 0 && at+1 < len(blocks), "the quick start has a block that starts %q, and the commands' block after it", confHeader)

	conf := blocks[at][1:]
	require.NotEmpty(t, conf)
	assert.True(t, strings.HasPrefix(conf[0], "SHARED_DIR=/"), "the config names its directory first: %q", conf[0])
	assert.Equal(t, qs.config, conf[1:], "the README's config is the demo's")

	var before, after []string
	comments := 0
	for _, line := range blocks[at+1] {
		switch {
		case strings.HasPrefix(line, "#"):
			comments++ // where the VM starts
		case comments == 0:
			before = append(before, strings.Join(strings.Fields(line), " "))
		default:
			after = append(after, strings.Join(strings.Fields(line), " "))
		}
	}
	assert.Equal(t, 1, comments, "one comment line, where the VM starts")
	assert.Equal(t, argvs(qs.beforeVM), before, "the commands before the VM")
	assert.Equal(t, argvs(qs.afterVM), after, "the commands after the VM")
}
