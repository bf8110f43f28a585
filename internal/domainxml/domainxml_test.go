package domainxml

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSnippetParsesAndRoundTrips(t *testing.T) {
	s, err := Snippet("vm1", "/run/virtiofsd/vm1.sock", "vm1")
	require.NoError(t, err)
	t.Logf("\n%s", s)

	p, err := ParseSnippet(s)
	require.NoError(t, err)
	assert.Equal(t, Filesystem("/run/virtiofsd/vm1.sock", "vm1"), p.Filesystem)
	assert.Equal(t, MemoryBacking(), p.MemoryBacking)
	require.NotNil(t, p.Filesystem.Source.Mount)
	assert.Equal(t, "/run/virtiofsd/vm1.sock", p.Filesystem.Source.Mount.Socket)
	assert.Equal(t, "virtiofs", p.Filesystem.Driver.Type)
	assert.Equal(t, "vm1", p.Filesystem.Target.Dir)
	assert.Equal(t, "memfd", p.MemoryBacking.MemorySource.Type)
	assert.Equal(t, "shared", p.MemoryBacking.MemoryAccess.Mode)

	// What libvirt reads: the element as libvirt's own documentation writes it.
	assert.Contains(t, s, `<filesystem type="mount">`)
	assert.Contains(t, s, `<source socket="/run/virtiofsd/vm1.sock">`)
	assert.Contains(t, s, `<driver type="virtiofs" queue="1024">`)

	// Marshalled again, the parsed elements give the same text.
	again, err := p.Filesystem.Marshal()
	require.NoError(t, err)
	want := Filesystem("/run/virtiofsd/vm1.sock", "vm1")
	first, err := want.Marshal()
	require.NoError(t, err)
	assert.Equal(t, first, again)
}

func TestSnippetRefusesTagsTheKernelRefuses(t *testing.T) {
	_, err := Snippet("vm1", "/run/virtiofsd/vm1.sock", strings.Repeat("x", MaxTagLen+1))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--tag")
	_, err = Snippet("vm1", "/run/virtiofsd/vm1.sock", strings.Repeat("x", MaxTagLen))
	require.NoError(t, err)
}

func TestParseSnippetRefusesOtherXML(t *testing.T) {
	for name, s := range map[string]string{
		"empty":         "",
		"no memory":     `<filesystem type="mount"><source socket="/s"/><target dir="t"/></filesystem>`,
		"other element": `<filesystem type="mount"/><memoryBacking/><disk/>`,
		"text":          `<filesystem type="mount"/>hello<memoryBacking/>`,
		"broken":        `<filesystem type="mount">`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseSnippet(s)
			assert.Error(t, err)
		})
	}
}
