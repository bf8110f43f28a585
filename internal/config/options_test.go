package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMigrationAndOptionKeys(t *testing.T) {
	in := `SHARED_DIR=/srv/vm1
MIGRATION_MODE=find-paths
MIGRATION_ON_ERROR=guest-error
MIGRATION_VERIFY_HANDLES=yes
MIGRATION_CONFIRM_PATHS=no
INODE_FILE_HANDLES=prefer
POSIX_ACL=auto
SECURITY_LABEL=yes
ALLOW_MMAP=yes
WRITEBACK=1
READDIRPLUS=no
PRESERVE_NOATIME=true
`
	c, err := Parse(strings.NewReader(in), file)
	require.NoError(t, err)
	assert.Equal(t, "find-paths", c.MigrationMode)
	assert.Equal(t, "guest-error", c.MigrationOnError)
	assert.Equal(t, ptr(true), c.MigrationVerifyHandles)
	assert.Equal(t, ptr(false), c.MigrationConfirmPaths)
	assert.Equal(t, "prefer", c.InodeFileHandles)
	assert.Equal(t, "auto", c.PosixACL)
	assert.Equal(t, "always", c.SecurityLabel, "yes is always")
	assert.Equal(t, ptr(true), c.AllowMmap)
	assert.Equal(t, ptr(true), c.Writeback)
	assert.Equal(t, ptr(false), c.Readdirplus)
	assert.Equal(t, ptr(true), c.PreserveNoatime)
	assert.Equal(t, "INODE_FILE_HANDLES", c.NeedsDACReadSearch())
	assert.Equal(t, 6, c.Line("INODE_FILE_HANDLES"))

	c, err = Parse(strings.NewReader("SHARED_DIR=/srv\nTRANSLATE_UID=map:1000:100000:65536 squash-guest:0:1000:10\nTRANSLATE_GID=host:0:0:1\nMIGRATION_MODE=file-handles\n"), file)
	require.NoError(t, err)
	assert.Equal(t, []string{"map:1000:100000:65536", "squash-guest:0:1000:10"}, c.TranslateUID)
	assert.Equal(t, []string{"host:0:0:1"}, c.TranslateGID)
	assert.Equal(t, "MIGRATION_MODE", c.NeedsDACReadSearch())
}

func TestParseRefusesBadOptionValues(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"MIGRATION_MODE=handles", ":2: MIGRATION_MODE=handles: not allowed (allowed: find-paths, file-handles)"},
		{"MIGRATION_ON_ERROR=ignore", ":2: MIGRATION_ON_ERROR=ignore: not allowed (allowed: abort, guest-error)"},
		{"INODE_FILE_HANDLES=fallback", ":2: INODE_FILE_HANDLES=fallback: not allowed (allowed: never, prefer, mandatory)"},
		{"POSIX_ACL=maybe", ":2: POSIX_ACL=maybe: not allowed (allowed: never, auto, always, or a boolean"},
		{"TRANSLATE_UID=1000:0:1", `:2: TRANSLATE_UID=1000:0:1: "1000:0:1" is not a mapping TYPE:BASE:BASE:COUNT`},
		{"TRANSLATE_GID=map:a:b:c", `:2: TRANSLATE_GID=map:a:b:c: "map:a:b:c" is not a mapping`},
		{"WRITEBACK=on", ":2: WRITEBACK=on: not a boolean"},
		// What virtiofsd refuses at start, refused at the key's line.
		{"MIGRATION_MODE=file-handles\nMIGRATION_VERIFY_HANDLES=yes", ":3: MIGRATION_VERIFY_HANDLES=yes is for MIGRATION_MODE=find-paths"},
		{"MIGRATION_CONFIRM_PATHS=yes\nMIGRATION_MODE=file-handles", ":2: MIGRATION_CONFIRM_PATHS=yes is for MIGRATION_MODE=find-paths"},
		{"POSIX_ACL=yes\nTRANSLATE_GID=map:0:1000:1", ":3: TRANSLATE_GID= cannot be used with POSIX_ACL=always (set at line 2)"},
	} {
		_, err := Parse(strings.NewReader("SHARED_DIR=/srv\n"+tc.in+"\n"), file)
		var ce *Error
		require.True(t, errors.As(err, &ce), "%s: %v", tc.in, err)
		assert.Contains(t, err.Error(), file+tc.want, tc.in)
	}
}

func TestSetRefusesACombinationVirtiofsdRefuses(t *testing.T) {
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nMIGRATION_VERIFY_HANDLES=yes\n"), file)
	require.NoError(t, err)
	err = c.Set("MIGRATION_MODE", "file-handles")
	assert.ErrorContains(t, err, "MIGRATION_VERIFY_HANDLES=yes is for MIGRATION_MODE=find-paths")
	assert.Equal(t, "", c.MigrationMode, "a refused value changes nothing")
}
