package virtiofsd

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// More of what Args refuses, each with the reason the admin reads.
func TestArgsRefusesWithItsReason(t *testing.T) {
	for _, tc := range []struct {
		flavor Flavor
		opts   Options
		want   string
	}{
		{Rust, Options{SharedDir: "/s", Cache: "sometimes"}, "CACHE=sometimes is not supported by the Rust virtiofsd (it knows auto, always, never, metadata)"},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--version"}}, `"--version" refused: it makes virtiofsd exit without serving`},
		{Rust, Options{SharedDir: "/s", Extra: []string{"-V"}}, `"-V" refused: it makes virtiofsd exit without serving`},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--help"}}, `"--help" refused: it makes virtiofsd exit without serving`},
		{Rust, Options{SharedDir: "/s", Extra: []string{"-h"}}, `"-h" refused: it makes virtiofsd exit without serving`},
		{Rust, Options{SharedDir: "/s", Extra: []string{"--log-level"}}, `"--log-level" refused: it needs a value`},
		{C, Options{SharedDir: "/s", Extra: []string{"--log-level=debug"}}, `"--log-level=debug" refused: the C virtiofsd takes -o log_level=LEVEL; better, set LOG_LEVEL=`},
		{Rust, Options{SharedDir: "/s", MigrationMode: "file-handles", Extra: []string{"-o", "modcaps=-mknod"}},
			`"-o modcaps=-mknod" refused: with MIGRATION_MODE=file-handles the shim adds +dac_read_search to virtiofsd's --modcaps`},
	} {
		_, err := Args(tc.flavor, tc.opts)
		require.Error(t, err, tc.want)
		assert.True(t, errors.Is(err, ErrOptions), "%v should wrap ErrOptions", err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

// With MIGRATION_MODE=file-handles the shim adds the capability, and keeps
// every extra argument that is not about capabilities as it is.
func TestFileHandlesMigrationKeepsOtherExtraArguments(t *testing.T) {
	for _, extra := range [][]string{{"--killpriv-v2"}, {"-o", "xattrmap=:map::user.virtiofs.:"}, {"--modcaps", "-mknod"}} {
		args, err := Args(Rust, Options{SharedDir: "/s", MigrationMode: "file-handles", Extra: extra})
		require.NoError(t, err, extra)
		if extra[0] == "--modcaps" {
			assert.Contains(t, args, "--modcaps=+dac_read_search:-mknod")
			continue
		}
		assert.Contains(t, args, "--modcaps=+dac_read_search")
		assert.Subset(t, args, extra)
	}
}
