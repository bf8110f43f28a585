package testdir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRepoRootHoldsGoMod(t *testing.T) {
	_, err := os.Stat(filepath.Join(RepoRoot(), "go.mod"))
	assert.NoError(t, err)
}

func TestShortFolderHoldsASocketPathAndIsRemovedAfterTheTest(t *testing.T) {
	var dir string
	t.Run("user", func(t *testing.T) {
		dir = Short(t)
		assert.Less(t, len(filepath.Join(dir, "virtiofsd-shim-instance.sock")), 108)
		require.DirExists(t, dir)
	})
	assert.NoDirExists(t, dir)
}
