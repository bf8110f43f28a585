package virtiofsd

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What the real binaries report (docs/virtiofsd.md, and virtiofsd's main.rs for 1.14).
var (
	rust1132 = Version{Flavor: Rust, Number: "1.13.2", Features: []string{"migrate-precopy", "separate-options"}}
	rust114  = Version{Flavor: Rust, Number: "1.14.0", Features: []string{"migrate-precopy", "posix-acl-negotiation-mode",
		"security-label-negotiation-mode", "separate-options"}}
	rust1120 = Version{Flavor: Rust, Number: "1.12.0", Features: []string{"migrate-precopy", "separate-options"}}
	rust1100 = Version{Flavor: Rust, Number: "1.10.1", Features: []string{"separate-options"}}
	rust111  = Version{Flavor: Rust, Number: "1.11.1"} // did not answer --print-capabilities: its version decides
)

const base = "--fd=3 --shared-dir=/s --cache=auto --log-level=info "

func TestArgsOfTheNewKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string // after base
	}{
		{"inode file handles always explicit", Options{}, "--inode-file-handles=never"},
		{"prefer", Options{InodeFileHandles: "prefer"}, "--inode-file-handles=prefer"},
		{"migration keys, source and destination alike", Options{MigrationMode: "find-paths", MigrationOnError: "guest-error",
			MigrationVerifyHandles: true, MigrationConfirmPaths: true},
			"--inode-file-handles=never --migration-mode=find-paths --migration-on-error=guest-error --migration-verify-handles --migration-confirm-paths"},
		{"file-handles migration adds the capability", Options{MigrationMode: "file-handles"},
			"--inode-file-handles=never --migration-mode=file-handles --modcaps=+dac_read_search"},
		{"into the one --modcaps virtiofsd keeps", Options{MigrationMode: "file-handles", Extra: []string{"--modcaps=-mknod", "--killpriv-v2"}},
			"--inode-file-handles=never --migration-mode=file-handles --modcaps=+dac_read_search:-mknod --killpriv-v2"},
		{"also in its two-word form", Options{MigrationMode: "file-handles", Extra: []string{"--modcaps", "-mknod"}},
			"--inode-file-handles=never --migration-mode=file-handles --modcaps=+dac_read_search:-mknod"},
		{"posix acl before 1.14 is a flag", Options{PosixACL: "always", SecurityLabel: "never", Version: rust1132},
			"--inode-file-handles=never --posix-acl"},
		{"1.14 negotiates", Options{PosixACL: "auto", SecurityLabel: "always", Version: rust114},
			"--inode-file-handles=never --posix-acl=auto --security-label=always"},
		{"1.14 never is explicit", Options{PosixACL: "never", Version: rust114}, "--inode-file-handles=never --posix-acl=never"},
		{"translate", Options{TranslateUID: []string{"map:1000:100000:10", "guest:0:0:1"}, TranslateGID: []string{"host:0:0:1"}, Version: rust1132},
			"--inode-file-handles=never --translate-uid=map:1000:100000:10 --translate-uid=guest:0:0:1 --translate-gid=host:0:0:1"},
		{"booleans", Options{AllowMmap: true, Writeback: true, NoReaddirplus: true, PreserveNoatime: true},
			"--inode-file-handles=never --allow-mmap --writeback --no-readdirplus --preserve-noatime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.SharedDir = "/s"
			got, err := Args(Rust, tc.opts)
			require.NoError(t, err)
			assert.Equal(t, strings.Fields(base+tc.want), got)
		})
	}
}

func TestArgsOfTheNewKeysForC(t *testing.T) {
	got, err := Args(C, Options{SharedDir: "/s", PosixACL: "always", SecurityLabel: "always", Writeback: true, NoReaddirplus: true, InodeFileHandles: "never"})
	require.NoError(t, err)
	assert.Equal(t, []string{"-f", "--fd=3", "-o", "source=/s", "-o", "cache=auto", "-o", "log_level=info",
		"-o", "posix_acl", "-o", "security_label", "-o", "writeback", "-o", "no_readdirplus"}, got)
}

// A key the installed binary cannot honour is refused with the version
// found and the version needed, at the key's line (OptionsError.Key).
func TestArgsRefusesWhatTheBinaryCannotDo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flavor Flavor
		opts   Options
		key    string
		want   []string
	}{
		{"migration on 1.10", Rust, Options{MigrationMode: "find-paths", Version: rust1100}, "MIGRATION_MODE",
			[]string{"MIGRATION_MODE=find-paths (live migration) needs the Rust virtiofsd 1.11 or later", "it lists migrate-precopy", "found Rust virtiofsd 1.10.1"}},
		{"file-handles on 1.11, by version", Rust, Options{MigrationMode: "file-handles", Version: rust111}, "MIGRATION_MODE",
			[]string{"MIGRATION_MODE=file-handles needs the Rust virtiofsd 1.12 or later", "found Rust virtiofsd 1.11.1"}},
		{"translate on 1.12", Rust, Options{TranslateGID: []string{"host:0:0:1"}, Version: rust1120}, "TRANSLATE_GID",
			[]string{"TRANSLATE_GID= needs the Rust virtiofsd 1.13 or later", "found Rust virtiofsd 1.12.0"}},
		{"readonly on 1.12", Rust, Options{Readonly: true, Version: rust1120}, "READONLY", []string{"READONLY=yes needs the Rust virtiofsd 1.13"}},
		{"posix acl auto on 1.13", Rust, Options{PosixACL: "auto", Version: rust1132}, "POSIX_ACL",
			[]string{"POSIX_ACL=auto needs the Rust virtiofsd 1.14 or later", "posix-acl-negotiation-mode", "found Rust virtiofsd 1.13.2"}},
		{"security label auto on 1.13", Rust, Options{SecurityLabel: "auto", Version: rust1132}, "SECURITY_LABEL",
			[]string{"SECURITY_LABEL=auto needs the Rust virtiofsd 1.14 or later"}},
		{"migration on C", C, Options{MigrationOnError: "abort"}, "MIGRATION_ON_ERROR",
			[]string{"MIGRATION_ON_ERROR= needs the Rust virtiofsd: the C one (QEMU <= 7.2) has no live migration", "apt install virtiofsd"}},
		{"file handles on C", C, Options{InodeFileHandles: "prefer"}, "INODE_FILE_HANDLES", []string{"has no file handles"}},
		{"auto on C", C, Options{PosixACL: "auto"}, "POSIX_ACL", []string{"POSIX_ACL=auto is not supported by the C virtiofsd"}},
		{"mmap on C", C, Options{AllowMmap: true}, "ALLOW_MMAP", []string{"ALLOW_MMAP= needs the Rust virtiofsd"}},
		{"keyed option in EXTRA_ARGS", Rust, Options{Extra: []string{"--inode-file-handles=prefer"}}, "EXTRA_ARGS",
			[]string{"set INODE_FILE_HANDLES= in the instance config instead"}},
		{"migration option in EXTRA_ARGS", Rust, Options{Extra: []string{"--migration-mode", "file-handles"}}, "EXTRA_ARGS",
			[]string{"set MIGRATION_MODE= in the instance config instead"}},
		{"C writeback in EXTRA_ARGS", C, Options{Extra: []string{"-o", "no_readdirplus"}}, "EXTRA_ARGS", []string{"set READDIRPLUS="}},
		{"dropping the capability file-handles needs", Rust, Options{MigrationMode: "file-handles", Extra: []string{"--modcaps=-mknod:-dac_read_search"}},
			"EXTRA_ARGS", []string{"needs CAP_DAC_READ_SEARCH"}},
		{"rootless file handles", Rust, Options{InodeFileHandles: "mandatory", Unprivileged: true}, "INODE_FILE_HANDLES",
			[]string{"rootless virtiofsd never has"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.SharedDir = "/s"
			_, err := Args(tc.flavor, tc.opts)
			var oe *OptionsError
			require.True(t, errors.As(err, &oe), "%v", err)
			assert.Equal(t, tc.key, oe.Key)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestVersionHonoursByFeatureElseByVersion(t *testing.T) {
	r := Requirement{Version: "1.11", Feature: FeatureMigratePrecopy}
	assert.True(t, rust1132.Honoured(r))
	assert.False(t, rust1100.Honoured(r))
	assert.True(t, rust111.Honoured(r), "no feature list: 1.11.1 >= 1.11")
	assert.False(t, Version{Flavor: Rust, Number: "1.9"}.Honoured(r))
	assert.True(t, Version{Number: "1.13.10"}.AtLeast("1.13.3"))
	assert.False(t, Version{Number: "1.13.2"}.AtLeast("1.13.3"))
	assert.True(t, Version{Number: "1.14.0-rc1"}.AtLeast("1.14"))
	assert.False(t, Version{}.AtLeast("1.0"))
}

func TestParseCapabilities(t *testing.T) {
	f, err := ParseCapabilities([]byte(`{"type": "fs", "features": ["migrate-precopy", "separate-options"]}`))
	require.NoError(t, err)
	assert.Equal(t, []string{"migrate-precopy", "separate-options"}, f)
	f, err = ParseCapabilities([]byte(`{"type": "fs"}`))
	require.NoError(t, err)
	assert.Equal(t, []string{}, f, "the C one: answered, no features")
	_, err = ParseCapabilities([]byte(`{"type": "net"}`))
	assert.Error(t, err)
	_, err = ParseCapabilities([]byte(`usage: ...`))
	assert.Error(t, err)
}

func TestAddedCapabilities(t *testing.T) {
	assert.Equal(t, []string{"CAP_DAC_READ_SEARCH", "CAP_SYS_NICE"}, AddedCapabilities([]string{"--fd=3", "--modcaps=+dac_read_search:-mknod:+SYS_NICE"}))
	assert.Equal(t, []string{"CAP_NET_ADMIN"}, AddedCapabilities([]string{"-o", "xattr,modcaps=+net_admin"}))
	assert.Equal(t, []string{"CAP_BPF"}, AddedCapabilities([]string{"--modcaps", "+bpf"}))
	assert.Empty(t, AddedCapabilities([]string{"--modcaps=-mknod"}))
}
