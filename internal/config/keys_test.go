package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Keys is the list the reference documents, so it must be exactly what the
// parser accepts: each listed key parses, and a key not listed is refused.
func TestKeysAreExactlyTheKeysTheParserAccepts(t *testing.T) {
	names := Keys()
	require.NotEmpty(t, names)
	assert.True(t, slices.IsSorted(names), "Keys is sorted: %v", names)
	assert.Contains(t, names, "SHARED_DIR")
	for _, k := range names {
		conf := "SHARED_DIR=/srv/vm1\n"
		if k != "SHARED_DIR" {
			conf += k + "=\n"
		}
		_, err := Parse(strings.NewReader(conf), "vm1.conf")
		assert.NoError(t, err, "%s= (an empty value leaves the key unset)", k)
	}
	_, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\nSHARD_DIR=\n"), "vm1.conf")
	assert.ErrorContains(t, err, "SHARD_DIR", "a key Keys does not list is refused")
}
