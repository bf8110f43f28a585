package plan

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/virtiofsd"
)

// scriptVirtiofsd is a binary that answers --version and
// --print-capabilities as a Rust virtiofsd of version with features does.
func scriptVirtiofsd(t *testing.T, version string, features ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "virtiofsd")
	caps := `{"type": "fs", "features": ["` + strings.Join(features, `", "`) + `"]}`
	script := "#!/bin/sh\ncase \"$1\" in\n--version) echo 'virtiofsd " + version + "' ;;\n" +
		"--print-capabilities) echo '" + caps + "' ;;\n*) exit 1 ;;\nesac\n"
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	return bin
}

func parse(t *testing.T, bin, body string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader("SHARED_DIR=/srv/vm1\nVIRTIOFSD="+bin+"\n"+body), "/etc/virtiofsd/vm1.conf")
	require.NoError(t, err)
	cfg.Instance = "vm1"
	return cfg
}

// A key the installed virtiofsd cannot honour is refused at its line, with
// the version found and the version needed; check and run both call Make.
func TestMakeRefusesAKeyTheInstalledVirtiofsdCannotHonour(t *testing.T) {
	bin := scriptVirtiofsd(t, "1.13.2", "migrate-precopy", "separate-options")
	for _, tc := range []struct{ body, want string }{
		{"XATTR=yes\nPOSIX_ACL=auto\n", "/etc/virtiofsd/vm1.conf:4: POSIX_ACL=auto needs the Rust virtiofsd 1.14 or later " +
			"(it lists posix-acl-negotiation-mode in --print-capabilities; this one lists migrate-precopy, separate-options); found Rust virtiofsd 1.13.2"},
		// FLAVOR=rust skips the flavor's detection, not the capabilities'.
		{"FLAVOR=rust\nSECURITY_LABEL=auto\n", "/etc/virtiofsd/vm1.conf:4: SECURITY_LABEL=auto needs the Rust virtiofsd 1.14"},
	} {
		_, err := Make(context.Background(), parse(t, bin, tc.body), config.System, virtiofsd.VersionCache{})
		require.Error(t, err, tc.body)
		assert.Contains(t, err.Error(), tc.want)
		assert.Equal(t, exitcode.Config, exitcode.For(err))
	}

	old := scriptVirtiofsd(t, "1.10.0", "separate-options")
	_, err := Make(context.Background(), parse(t, old, "MIGRATION_MODE=find-paths\n"), config.System, virtiofsd.VersionCache{})
	assert.ErrorContains(t, err, "vm1.conf:3: MIGRATION_MODE=find-paths (live migration) needs the Rust virtiofsd 1.11 or later")
	assert.ErrorContains(t, err, "found Rust virtiofsd 1.10.0")
}

func TestMakePassesWhatTheInstalledVirtiofsdTakes(t *testing.T) {
	v114 := scriptVirtiofsd(t, "1.14.0", "migrate-precopy", "posix-acl-negotiation-mode", "security-label-negotiation-mode", "separate-options")
	p, err := Make(context.Background(), parse(t, v114, "POSIX_ACL=auto\nMIGRATION_MODE=file-handles\nREADDIRPLUS=no\n"), config.System, virtiofsd.VersionCache{})
	require.NoError(t, err)
	assert.Equal(t, []string{"--fd=3", "--shared-dir=/srv/vm1", "--cache=auto", "--log-level=info", "--inode-file-handles=never",
		"--migration-mode=file-handles", "--posix-acl=auto", "--no-readdirplus", "--modcaps=+dac_read_search"}, p.Args)
	assert.Equal(t, "1.14.0", p.Version.Number)

	v113 := scriptVirtiofsd(t, "1.13.2", "migrate-precopy", "separate-options")
	p, err = Make(context.Background(), parse(t, v113, "POSIX_ACL=yes\nINODE_FILE_HANDLES=prefer\n"), config.System, virtiofsd.VersionCache{})
	require.NoError(t, err)
	assert.Equal(t, []string{"--fd=3", "--shared-dir=/srv/vm1", "--cache=auto", "--log-level=info", "--inode-file-handles=prefer",
		"--posix-acl"}, p.Args, "before 1.14, --posix-acl is a flag")
}

// FLAVOR=rust names the flavor, yet the front still asks the binary
// whether it can save its state; one that cannot answer is said so.
func TestFlavorRustStillRunsTheFrontWhereTheBinaryCanSaveItsState(t *testing.T) {
	bin := scriptVirtiofsd(t, "1.13.2", "migrate-precopy", "separate-options")
	p, err := Make(context.Background(), parse(t, bin, "FLAVOR=rust\n"), config.System, virtiofsd.VersionCache{})
	require.NoError(t, err)
	ok, why := Front(p)
	assert.True(t, ok, why)

	mute := filepath.Join(t.TempDir(), "virtiofsd")
	require.NoError(t, os.WriteFile(mute, []byte("#!/bin/sh\nexit 1\n"), 0o755))
	p, err = Make(context.Background(), parse(t, mute, "FLAVOR=rust\n"), config.System, virtiofsd.VersionCache{})
	require.NoError(t, err, "FLAVOR=rust starts a binary that does not answer, as before")
	ok, why = Front(p)
	assert.False(t, ok)
	assert.Contains(t, why, "did not answer --print-capabilities")
	assert.NotContains(t, why, "does not list")
}
