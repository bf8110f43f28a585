package generator

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

func envOf(m map[string]string) config.Env { return func(k string) string { return m[k] } }

func TestGeneratorRunBySystemdWritesTheScopesDropIns(t *testing.T) {
	home, out := t.TempDir(), t.TempDir()
	conf := filepath.Join(home, "virtiofsd")
	require.NoError(t, os.Mkdir(conf, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(conf, "vm1.conf"), []byte("SHARED_DIR=/srv/vm1\nSOCKET_MODE=0600\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(conf, "bad.conf"), []byte("SHARED_DIR=/srv/bad\nSHARD_DIR=x\nCACHE=sometimes\n"), 0o644))
	var log bytes.Buffer
	err := Run([]string{out, out, out}, envOf(map[string]string{"SYSTEMD_SCOPE": "user", "XDG_CONFIG_HOME": home}), &log)
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(out, "virtiofsd@vm1.socket.d", DropInName))
	require.NoError(t, err)
	assert.Contains(t, string(b), "SocketMode=0600")
	bad := filepath.Join(conf, "bad.conf")
	assert.Contains(t, log.String(), Name+": skipping virtiofsd@bad: "+bad+":2: unknown key SHARD_DIR: did you mean SHARED_DIR?\n"+
		Name+": also virtiofsd@bad: "+bad+":3: CACHE=sometimes: not allowed", "each problem a line of its own, for the journal")
}

func TestGeneratorRefusesWhatSystemdWouldNotPassWithTheUsageStatus(t *testing.T) {
	var log bytes.Buffer
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, nil},
		{[]string{"a", "b"}, nil},
		{[]string{t.TempDir()}, map[string]string{"SYSTEMD_SCOPE": "global"}},
	} {
		err := Run(tc.args, envOf(tc.env), &log)
		assert.Equal(t, exitcode.Usage, exitcode.For(err), "%v", err)
	}
}

func TestGeneratorWithNoConfigFolderWritesNothingAndSucceeds(t *testing.T) {
	out := t.TempDir()
	var log bytes.Buffer
	err := Run([]string{out}, envOf(map[string]string{"SYSTEMD_SCOPE": "user", "XDG_CONFIG_HOME": filepath.Join(t.TempDir(), "none")}), &log)
	require.NoError(t, err)
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

func TestGeneratorThatCannotWriteFails(t *testing.T) {
	home := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(home, "virtiofsd"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(home, "virtiofsd", "vm1.conf"), []byte("SHARED_DIR=/srv/vm1\n"), 0o644))
	notADir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))
	var log bytes.Buffer
	err := Run([]string{notADir}, envOf(map[string]string{"SYSTEMD_SCOPE": "user", "XDG_CONFIG_HOME": home}), &log)
	assert.ErrorContains(t, err, "write drop-ins into "+notADir)
	assert.NotEqual(t, exitcode.OK, exitcode.For(err))
}
