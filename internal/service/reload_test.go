package service

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/front"
)

func parse(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse(strings.NewReader(text), "/etc/virtiofsd/vm1.conf")
	require.NoError(t, err)
	return c
}

func TestReloadAppliesOnlyChangesTheGuestCannotSee(t *testing.T) {
	const base = "SHARED_DIR=/srv/vm1\nCACHE=auto\nEXTRA_ARGS=--log-level=info --xattrmap=:ok:all::\n"
	old := parse(t, base)
	for _, tc := range []struct {
		name, now string
		refused   string // "" when the reload may apply it
	}{
		{"nothing changed", base, ""},
		{"a new log level", base + "LOG_LEVEL=debug\nREADY_TIMEOUT=20s\nSTOP_TIMEOUT=9s\n", ""},
		{"another binary", base + "VIRTIOFSD=/opt/virtiofsd\nSTANDBY=yes\n", ""},
		{"EXTRA_ARGS changing only the log level", "SHARED_DIR=/srv/vm1\nCACHE=auto\nEXTRA_ARGS=--log-level=debug --xattrmap=:ok:all::\n", ""},
		{"another shared directory", "SHARED_DIR=/srv/other\nCACHE=auto\nEXTRA_ARGS=--log-level=info --xattrmap=:ok:all::\n",
			`/etc/virtiofsd/vm1.conf:1: SHARED_DIR changed from "/srv/vm1" to "/srv/other", which the guest would see`},
		{"uid translation", base + "TRANSLATE_UID=map:1000:2000:1\n", "/etc/virtiofsd/vm1.conf:4: TRANSLATE_UID changed"},
		{"the migration mode", base + "MIGRATION_MODE=file-handles\n", "/etc/virtiofsd/vm1.conf:4: MIGRATION_MODE changed"},
		{"a removed key", "SHARED_DIR=/srv/vm1\nEXTRA_ARGS=--log-level=info --xattrmap=:ok:all::\n", `vm1.conf:2: CACHE changed from "auto" to ""`},
		{"EXTRA_ARGS changing more than logging", "SHARED_DIR=/srv/vm1\nCACHE=auto\nEXTRA_ARGS=--log-level=info\n", "vm1.conf:3: EXTRA_ARGS changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ReloadRefusal(old, parse(t, tc.now))
			if tc.refused == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.refused)
			assert.Contains(t, err.Error(), "a reload applies only FLAVOR, FRONT, LOG_LEVEL")
		})
	}
}

// A reload whose new virtiofsd could not load the state while the old one
// kept the session is tried again, up to three tries; any other failure
// is final.
func TestReloadTriesAgainOnlyAFailedLoadThatKeptTheSession(t *testing.T) {
	lost := &front.SwapError{Step: front.StepLoad, Err: errors.New("Migration source has lost inode 42"), Kept: true}
	assert.True(t, retryReload(lost, 1))
	assert.True(t, retryReload(fmt.Errorf("reload: %w", lost), 2))
	assert.False(t, retryReload(lost, 3), "three tries in all")
	assert.False(t, retryReload(&front.SwapError{Step: front.StepLoad, Err: lost.Err}, 1), "the session was lost")
	assert.False(t, retryReload(&front.SwapError{Step: front.StepSave, Err: lost.Err, Kept: true}, 1))
	assert.False(t, retryReload(errors.New("no swap"), 1))
}
