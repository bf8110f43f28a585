package virtiofsd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingVirtiofsd is a script answering --version and
// --print-capabilities like the Rust virtiofsd, counting how often it was
// asked its version.
func countingVirtiofsd(t *testing.T, dir, version string) (bin, count string) {
	bin, count = filepath.Join(dir, "virtiofsd"), filepath.Join(dir, "count")
	script := "#!/bin/sh\nif [ \"$1\" = --print-capabilities ]; then\n" +
		"echo '{\"type\": \"fs\", \"features\": [\"migrate-precopy\", \"separate-options\"]}'; exit 0\nfi\n" +
		"echo x >> " + count + "\necho 'virtiofsd " + version + "'\n"
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	return bin, count
}

func asked(t *testing.T, count string) int {
	b, err := os.ReadFile(count)
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	return strings.Count(string(b), "x")
}

func TestVersionCacheAsksTheBinaryOncePerIdentity(t *testing.T) {
	dir := t.TempDir()
	bin, count := countingVirtiofsd(t, dir, "1.13.3")
	c := VersionCache{Dir: filepath.Join(dir, "cache")}
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		v, err := c.Detect(ctx, bin)
		require.NoError(t, err)
		assert.Equal(t, Version{Flavor: Rust, Number: "1.13.3", Features: []string{"migrate-precopy", "separate-options"}}, v)
	}
	assert.Equal(t, 1, asked(t, count), "later sessions read the cache")

	// A package upgrade replaces the binary: a new identity, asked again.
	require.NoError(t, os.Remove(bin))
	bin, _ = countingVirtiofsd(t, dir, "1.14.0")
	require.NoError(t, os.Chtimes(bin, time.Now().Add(time.Minute), time.Now().Add(time.Minute)))
	v, err := c.Detect(ctx, bin)
	require.NoError(t, err)
	assert.Equal(t, Version{Flavor: Rust, Number: "1.14.0", Features: []string{"migrate-precopy", "separate-options"}}, v)
	assert.Equal(t, 2, asked(t, count))
}

func TestVersionCacheThatCannotBeWrittenOnlyCostsTheDetection(t *testing.T) {
	dir := t.TempDir()
	bin, count := countingVirtiofsd(t, dir, "1.13.3")
	notADir := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))
	c := VersionCache{Dir: filepath.Join(notADir, "cache")}
	for i := 0; i < 2; i++ {
		v, err := c.Detect(context.Background(), bin)
		require.NoError(t, err)
		assert.Equal(t, Rust, v.Flavor)
	}
	assert.Equal(t, 2, asked(t, count))
}
