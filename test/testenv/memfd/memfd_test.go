package memfd

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAMemfdHoldsItsContentFromTheStart(t *testing.T) {
	f := New(t, "state", "saved state")
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<10))
	require.NoError(t, err)
	assert.Equal(t, "saved state", string(b))
	assert.Equal(t, "state", f.Name())
}

func TestAMemfdIsClosedWhenTheTestEnds(t *testing.T) {
	var f interface{ Close() error }
	t.Run("user", func(t *testing.T) { f = New(t, "m", "") })
	assert.Error(t, f.Close(), "already closed by the test's cleanup")
}
