package docstest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The anchors GitHub gives these headings (as it renders them).
func TestSlugIsGitHubsAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"Quick start": "quick-start",
		"Listing instances: `virtiofsd-shim list`":          "listing-instances-virtiofsd-shim-list",
		"Rootless: your own instances (`systemctl --user`)": "rootless-your-own-instances-systemctl---user",
		"Failed live migrations: exit status 76":            "failed-live-migrations-exit-status-76",
		"SOCKET_USER and [the socket](x.md)":                "socket_user-and-the-socket",
		"What a running VM survives":                        "what-a-running-vm-survives",
	} {
		assert.Equal(t, want, Slug(heading), "%q", heading)
	}
}

func TestAnchorsNumberRepeatedHeadingsAndSkipCode(t *testing.T) {
	a := Anchors("# Title\n## Notes\n```\n## Not a heading\n```\n## Notes\n")
	assert.Equal(t, map[string]bool{"title": true, "notes": true, "notes-1": true}, a)
}

func TestLinksSkipCodeAndFindReferences(t *testing.T) {
	text := "See [a](docs/a.md#x) and `[b](no.md)`.\n```\n[c](no.md)\n```\n[d]: docs/d.md\n![img](pic.png \"title\")\n"
	var got []string
	for _, l := range Links(text) {
		got = append(got, l.Target)
	}
	assert.Equal(t, []string{"docs/a.md#x", "docs/d.md", "pic.png"}, got)
}
