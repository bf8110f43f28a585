package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// A new user's file with a bad value on line 2 and a typo on line 3: one
// read reports both, each at its line, and the typo names the key meant.
func TestParseReportsEveryProblemOfAFileAtOnce(t *testing.T) {
	_, err := Parse(strings.NewReader("# vm1\nCACHE=sometimes\nSHARD_DIR=/srv/vm1\n"), file)
	require.Error(t, err)
	problems := Problems(err)
	require.Len(t, problems, 2, err.Error())
	assert.Equal(t, file+":2: CACHE=sometimes: not allowed "+allowedCache, problems[0].Error())
	assert.Equal(t, CodeBadValue, problems[0].Code)
	assert.Equal(t, file+":3: unknown key SHARD_DIR: did you mean SHARED_DIR?", problems[1].Error())
	assert.Equal(t, CodeUnknownKey, problems[1].Code)
	assert.Equal(t, problems[0].Error()+"\n"+problems[1].Error(), err.Error(), "one line each")
	assert.Equal(t, exitcode.Config, exitcode.For(err))
	var first *Error
	require.True(t, errors.As(err, &first))
	assert.Equal(t, 2, first.Line, "the first problem is the one errors.As finds")
}

// A file that lacks SHARED_DIR and has another problem says both.
func TestParseReportsAMissingSharedDirBesideOtherProblems(t *testing.T) {
	_, err := Parse(strings.NewReader("CACHE=never\nCACHE=auto\n"), file)
	problems := Problems(err)
	require.Len(t, problems, 2, err.Error())
	assert.Equal(t, CodeDuplicateKey, problems[0].Code)
	assert.Equal(t, CodeMissingShared, problems[1].Code)
}

func TestUnknownKeySuggestsTheNearestKnownKey(t *testing.T) {
	for in, want := range map[string]string{
		"SHARD_DIR":       "did you mean SHARED_DIR?",
		"shared_dir":      "did you mean SHARED_DIR?",
		"CACHEE":          "did you mean CACHE?",
		"SOCKET_MOD":      "did you mean SOCKET_MODE?",
		"THREADPOOL_SIZE": "did you mean THREAD_POOL_SIZE?",
	} {
		_, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\n"+in+"=1\n"), file)
		assert.ErrorContains(t, err, file+":2: unknown key "+in+": "+want)
		assert.NotContains(t, err.Error(), "known:", "a suggestion replaces the list")
	}
}

func TestUnknownKeyFarFromEveryKeyListsThemAll(t *testing.T) {
	for _, in := range []string{"NO_SUCH_KEY", "CACHEMODE", "X"} {
		_, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\n"+in+"=1\n"), file)
		assert.ErrorContains(t, err, "unknown key "+in+" (known: ALLOW_MMAP, ")
		assert.NotContains(t, err.Error(), "did you mean")
	}
}

func TestScopeOfTheUserFlag(t *testing.T) {
	assert.Equal(t, User, ScopeOf(true))
	assert.Equal(t, System, ScopeOf(false))
}

func TestResolveAppliesOverridesOverTheFile(t *testing.T) {
	share, other := t.TempDir(), t.TempDir()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vm1.conf"), []byte("SHARED_DIR="+share+"\nCACHE=never\nLOG_LEVEL=debug\n"), 0o644))

	c, err := Resolve(System, dir, "vm1", []Override{{"cache", "CACHE", "always"}, {"shared-dir", "SHARED_DIR", other}})
	require.NoError(t, err)
	assert.Equal(t, "vm1", c.Instance)
	assert.Equal(t, "always", c.Cache, "the flag wins")
	assert.Equal(t, other, c.SharedDir, "the flag wins")
	assert.Equal(t, "debug", c.LogLevel, "keys no flag names stay the file's")

	_, err = Resolve(System, dir, "vm1", []Override{{"cache", "CACHE", "sometimes"}})
	assert.ErrorContains(t, err, "--cache: CACHE=sometimes")
	assert.Equal(t, exitcode.Config, exitcode.For(err))
}

func TestResolveWithoutAFileNeedsTheSharedDirFlag(t *testing.T) {
	share, dir := t.TempDir(), t.TempDir()
	c, err := Resolve(System, dir, "vm2", []Override{{"shared-dir", "SHARED_DIR", share}})
	require.NoError(t, err, "a missing file is fine when the flags name the shared directory")
	assert.Equal(t, share, c.SharedDir)
	assert.Equal(t, "vm2", c.Instance)
	assert.Equal(t, "auto", c.Flavor)

	_, err = Resolve(System, dir, "vm2", nil)
	assert.ErrorIs(t, err, os.ErrNotExist, "without it, the missing file is the error")

	_, err = Resolve(System, dir, "", []Override{{"cache", "CACHE", "never"}})
	assert.ErrorContains(t, err, "no shared directory: pass --instance=NAME with SHARED_DIR= in "+filepath.Join(dir, "NAME.conf")+", or --shared-dir=DIR")

	_, err = Resolve(System, dir, "../etc", []Override{{"shared-dir", "SHARED_DIR", share}})
	assert.ErrorContains(t, err, "instance name")
}
