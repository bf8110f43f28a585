package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const file = "/etc/virtiofsd/vm1.conf"

func ptr[T any](v T) *T { return &v }

func TestParseAcceptsEveryKey(t *testing.T) {
	in := `# vm1
SHARED_DIR=/srv/vm1
CACHE=always
VIRTIOFSD=/usr/libexec/virtiofsd
FLAVOR=rust
SANDBOX=chroot
THREAD_POOL_SIZE=0
XATTR=yes
ANNOUNCE_SUBMOUNTS=false
READONLY=1
READY_TIMEOUT=1m30s
STOP_TIMEOUT=10
EXTRA_ARGS="--modcaps=-mknod -o 'a=b c'"
LOG_LEVEL=debug
FRONT=no
`
	c, err := Parse(strings.NewReader(in), file)
	require.NoError(t, err)
	assert.Equal(t, 14, c.Line("LOG_LEVEL"))
	assert.Equal(t, "--modcaps=-mknod -o 'a=b c'", c.Value("EXTRA_ARGS"), "a reload compares values as written")
	c.lines, c.values = nil, nil
	assert.Equal(t, &Config{
		Path:              file,
		SharedDir:         "/srv/vm1",
		Cache:             "always",
		Virtiofsd:         "/usr/libexec/virtiofsd",
		Flavor:            "rust",
		Sandbox:           "chroot",
		ThreadPoolSize:    ptr(0),
		Xattr:             ptr(true),
		AnnounceSubmounts: ptr(false),
		Readonly:          ptr(true),
		ReadyTimeout:      90 * time.Second,
		StopTimeout:       10 * time.Second,
		ExtraArgs:         []string{"--modcaps=-mknod", "-o", "a=b c"},
		LogLevel:          "debug",
		Front:             "no",
	}, c)
}

func TestParseLeavesUnsetKeysUnset(t *testing.T) {
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\nCACHE=\nXATTR=\nFLAVOR=\nFRONT=\n"), file)
	require.NoError(t, err)
	c.lines, c.values = nil, nil
	assert.Equal(t, &Config{Path: file, SharedDir: "/srv/vm1", Flavor: "auto", Front: "auto"}, c)
}

// TestParseValues walks the accepted spellings of each value.
func TestParseValues(t *testing.T) {
	tests := []struct {
		line  string
		check func(t *testing.T, c *Config)
	}{
		{"CACHE=auto", func(t *testing.T, c *Config) { assert.Equal(t, "auto", c.Cache) }},
		{"CACHE=never", func(t *testing.T, c *Config) { assert.Equal(t, "never", c.Cache) }},
		{"CACHE=none", func(t *testing.T, c *Config) { assert.Equal(t, "never", c.Cache) }},
		{"CACHE=metadata", func(t *testing.T, c *Config) { assert.Equal(t, "metadata", c.Cache) }},
		{`CACHE="never"`, func(t *testing.T, c *Config) { assert.Equal(t, "never", c.Cache) }},
		{"CACHE = 'never'  ", func(t *testing.T, c *Config) { assert.Equal(t, "never", c.Cache) }},
		{"FLAVOR=c", func(t *testing.T, c *Config) { assert.Equal(t, "c", c.Flavor) }},
		{"FLAVOR=auto", func(t *testing.T, c *Config) { assert.Equal(t, "auto", c.Flavor) }},
		{"SANDBOX=namespace", func(t *testing.T, c *Config) { assert.Equal(t, "namespace", c.Sandbox) }},
		{"SANDBOX=none", func(t *testing.T, c *Config) { assert.Equal(t, "none", c.Sandbox) }},
		{"XATTR=true", func(t *testing.T, c *Config) { assert.Equal(t, ptr(true), c.Xattr) }},
		{"XATTR=1", func(t *testing.T, c *Config) { assert.Equal(t, ptr(true), c.Xattr) }},
		{"XATTR=no", func(t *testing.T, c *Config) { assert.Equal(t, ptr(false), c.Xattr) }},
		{"XATTR=0", func(t *testing.T, c *Config) { assert.Equal(t, ptr(false), c.Xattr) }},
		{"ANNOUNCE_SUBMOUNTS=yes", func(t *testing.T, c *Config) { assert.Equal(t, ptr(true), c.AnnounceSubmounts) }},
		{"READONLY=false", func(t *testing.T, c *Config) { assert.Equal(t, ptr(false), c.Readonly) }},
		{"THREAD_POOL_SIZE=64", func(t *testing.T, c *Config) { assert.Equal(t, ptr(64), c.ThreadPoolSize) }},
		{"READY_TIMEOUT=500ms", func(t *testing.T, c *Config) { assert.Equal(t, 500*time.Millisecond, c.ReadyTimeout) }},
		{"READY_TIMEOUT=1.5s", func(t *testing.T, c *Config) { assert.Equal(t, 1500*time.Millisecond, c.ReadyTimeout) }},
		{"STOP_TIMEOUT=90", func(t *testing.T, c *Config) { assert.Equal(t, 90*time.Second, c.StopTimeout) }},
		{"STOP_TIMEOUT=2m", func(t *testing.T, c *Config) { assert.Equal(t, 2*time.Minute, c.StopTimeout) }},
		{"VIRTIOFSD=/usr/lib/qemu/virtiofsd", func(t *testing.T, c *Config) { assert.Equal(t, "/usr/lib/qemu/virtiofsd", c.Virtiofsd) }},
		{"EXTRA_ARGS=--log-level=debug", func(t *testing.T, c *Config) { assert.Equal(t, []string{"--log-level=debug"}, c.ExtraArgs) }},
		{`EXTRA_ARGS="-o \"x y\" z"`, func(t *testing.T, c *Config) { assert.Equal(t, []string{"-o", "x y", "z"}, c.ExtraArgs) }},
		{`EXTRA_ARGS='-o "x y"'`, func(t *testing.T, c *Config) { assert.Equal(t, []string{"-o", "x y"}, c.ExtraArgs) }},
		{"EXTRA_ARGS=\"--a \\\n  --b\"", func(t *testing.T, c *Config) { assert.Equal(t, []string{"--a", "--b"}, c.ExtraArgs) }},
		{"EXTRA_ARGS=--a \\\n  --b", func(t *testing.T, c *Config) { assert.Equal(t, []string{"--a", "--b"}, c.ExtraArgs) }},
		{"EXTRA_ARGS=--fdx", func(t *testing.T, c *Config) { assert.Equal(t, []string{"--fdx"}, c.ExtraArgs) }},
		{"EXTRA_ARGS=", func(t *testing.T, c *Config) { assert.Nil(t, c.ExtraArgs) }},
		{"EXTRA_ARGS='  '", func(t *testing.T, c *Config) { assert.Nil(t, c.ExtraArgs) }},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			c, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\n"+tt.line+"\n"), file)
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

const allowedCache = "(allowed: auto, always, never, none (same as never), metadata (Rust virtiofsd only))"
const allowedBool = "(allowed: yes, no, true, false, 1, 0)"
const allowedDuration = "(allowed: a positive Go duration such as 10s, 1m30s, 500ms, or whole seconds such as 10)"

// TestParseRefuses gives the exact message for each refused file: it names
// the file, the line, the key, the value and the fix.
func TestParseRefuses(t *testing.T) {
	const known = "(known: ALLOW_MMAP, ANNOUNCE_SUBMOUNTS, CACHE, EXTRA_ARGS, FLAVOR, FRONT, GID_MAP, INODE_FILE_HANDLES, LOG_LEVEL, MIGRATION_CONFIRM_PATHS, MIGRATION_MODE, MIGRATION_ON_ERROR, MIGRATION_VERIFY_HANDLES, POSIX_ACL, PRESERVE_NOATIME, READDIRPLUS, READONLY, READY_TIMEOUT, SANDBOX, SECURITY_LABEL, SHARED_DIR, SOCKET_GROUP, SOCKET_MODE, SOCKET_USER, STANDBY, STOP_TIMEOUT, THREAD_POOL_SIZE, TRANSLATE_GID, TRANSLATE_UID, UID_MAP, VIRTIOFSD, WRITEBACK, XATTR)"
	tests := []struct {
		name, in, want string
	}{
		{"unknown key", "SHARED_DIR=/srv/vm1\n\nCACHEMODE=never\n",
			file + ":3: unknown key CACHEMODE " + known},
		{"lower-case key", "SHARED_DIR=/srv/vm1\ncache=never\n",
			file + ":2: unknown key cache: did you mean CACHE?"},
		{"export", "SHARED_DIR=/srv/vm1\nexport CACHE=never\n",
			file + `:2: unknown key "export CACHE" (drop "export": this is a systemd environment file, not a shell script) ` + known},
		{"byte order mark", "\ufeffSHARED_DIR=/srv\n",
			file + `:1: unknown key "\ufeffSHARED_DIR" (the file starts with a byte order mark: save it as UTF-8 without BOM) ` + known},
		{"duplicate key", "CACHE=never\nSHARED_DIR=/srv/vm1\nCACHE=auto\n",
			file + ":3: duplicate key CACHE, already set at " + file + ":1: keep one of the two lines"},
		{"missing SHARED_DIR", "CACHE=never\n",
			file + ": SHARED_DIR is required: add a line such as SHARED_DIR=/srv/vm1 naming the directory to share"},
		{"empty SHARED_DIR", "SHARED_DIR=\n",
			file + ":1: SHARED_DIR is required: add a line such as SHARED_DIR=/srv/vm1 naming the directory to share"},
		{"relative SHARED_DIR", "SHARED_DIR=srv/vm1\n",
			file + ":1: SHARED_DIR=srv/vm1: not an absolute path: write the full path of the directory to share, starting with / (e.g. SHARED_DIR=/srv/vm1)"},
		{"bad CACHE", "SHARED_DIR=/srv/vm1\nCACHE=sometimes\n",
			file + ":2: CACHE=sometimes: not allowed " + allowedCache},
		{"CACHE upper case", "SHARED_DIR=/srv/vm1\nCACHE=Never\n",
			file + ":2: CACHE=Never: not allowed " + allowedCache},
		{"comment after value", "SHARED_DIR=/srv/vm1\nCACHE=never # no cache\n",
			file + `:2: CACHE="never # no cache": not allowed ` + allowedCache +
				` ("#" after a value is part of it, not a comment: put comments on lines of their own)`},
		{"bad FLAVOR", "SHARED_DIR=/srv/vm1\nFLAVOR=go\n",
			file + ":2: FLAVOR=go: not allowed (allowed: auto, c, rust)"},
		{"bad SANDBOX", "SHARED_DIR=/srv/vm1\nSANDBOX=jail\n",
			file + ":2: SANDBOX=jail: not allowed (allowed: namespace, chroot, none)"},
		{"relative VIRTIOFSD", "SHARED_DIR=/srv/vm1\nVIRTIOFSD=virtiofsd\n",
			file + ":2: VIRTIOFSD=virtiofsd: not an absolute path: write the full path of the virtiofsd binary (e.g. VIRTIOFSD=/usr/libexec/virtiofsd or /usr/lib/qemu/virtiofsd)"},
		{"negative THREAD_POOL_SIZE", "SHARED_DIR=/srv/vm1\nTHREAD_POOL_SIZE=-1\n",
			file + ":2: THREAD_POOL_SIZE=-1: not a whole number from 0 to 2147483647"},
		{"huge THREAD_POOL_SIZE", "SHARED_DIR=/srv/vm1\nTHREAD_POOL_SIZE=2147483648\n",
			file + ":2: THREAD_POOL_SIZE=2147483648: not a whole number from 0 to 2147483647"},
		{"word THREAD_POOL_SIZE", "SHARED_DIR=/srv/vm1\nTHREAD_POOL_SIZE=many\n",
			file + ":2: THREAD_POOL_SIZE=many: not a whole number from 0 to 2147483647"},
		{"bad bool", "SHARED_DIR=/srv/vm1\nXATTR=on\n",
			file + ":2: XATTR=on: not a boolean " + allowedBool},
		{"bad bool quoted", "SHARED_DIR=/srv/vm1\nREADONLY='yes please'\n",
			file + `:2: READONLY="yes please": not a boolean ` + allowedBool},
		{"zero timeout", "SHARED_DIR=/srv/vm1\nREADY_TIMEOUT=0\n",
			file + ":2: READY_TIMEOUT=0: not positive " + allowedDuration},
		{"negative timeout", "SHARED_DIR=/srv/vm1\nSTOP_TIMEOUT=-5s\n",
			file + ":2: STOP_TIMEOUT=-5s: not positive " + allowedDuration},
		{"systemd-only duration", "SHARED_DIR=/srv/vm1\nSTOP_TIMEOUT=5min\n",
			file + ":2: STOP_TIMEOUT=5min: not a duration " + allowedDuration},
		{"huge seconds", "SHARED_DIR=/srv/vm1\nSTOP_TIMEOUT=99999999999\n",
			file + ":2: STOP_TIMEOUT=99999999999: too large " + allowedDuration},
		{"unbalanced EXTRA_ARGS", "SHARED_DIR=/srv/vm1\nEXTRA_ARGS=\"-o 'x\"\n",
			file + `:2: EXTRA_ARGS="-o 'x": cannot split into arguments (Unterminated single-quoted string): quote with '...' or "..." inside the value, e.g. EXTRA_ARGS="--modcaps=-mknod -o 'opt=a b'"`},
		{"syntax error", "SHARED_DIR=/srv/vm1\nCACHE never\n",
			file + `:2: no "=" in "CACHE never": write KEY=VALUE`},
		{"unterminated quote", "SHARED_DIR=\"/srv/vm1\n",
			file + `:1: unterminated double quote: add the closing "`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.in), file)
			require.Error(t, err, "accepted as %+v", c)
			assert.Equal(t, tt.want, err.Error())
			var ce *Error
			require.True(t, errors.As(err, &ce))
			assert.Equal(t, file, ce.File)
		})
	}
}

func TestParseRefusesHugeInput(t *testing.T) {
	_, err := Parse(strings.NewReader("#"+strings.Repeat("x", maxFileSize)), file)
	assert.EqualError(t, err, file+": larger than 1048576 bytes: this is not a configuration file")
}

// TestSetOverridesTheFile is how run's flags replace file values.
func TestSetOverridesTheFile(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv/vm1\nCACHE=always\nXATTR=yes\n"), file)
	require.NoError(t, err)

	require.NoError(t, c.Set("CACHE", "none"))
	require.NoError(t, c.Set("XATTR", ""))
	require.NoError(t, c.Set("FLAVOR", "c"))
	require.NoError(t, c.Set("SHARED_DIR", dir))
	assert.Equal(t, "never", c.Cache)
	assert.Nil(t, c.Xattr)
	assert.Equal(t, "c", c.Flavor)
	assert.Equal(t, dir, c.SharedDir)

	assert.EqualError(t, c.Set("CACHE", "bogus"), "CACHE=bogus: not allowed "+allowedCache)
	assert.Equal(t, "never", c.Cache, "a refused value changes nothing")
	assert.ErrorContains(t, c.Set("CACHEMODE", "x"), "unknown key CACHEMODE (known: ALLOW_MMAP, ANNOUNCE_SUBMOUNTS,")
	assert.EqualError(t, c.Set("SHARED_DIR", ""), "SHARED_DIR cannot be empty: give the directory to share")
	err = c.Set("SHARED_DIR", dir+"/nope")
	assert.EqualError(t, err, "SHARED_DIR "+dir+"/nope does not exist: create it (mkdir -p "+dir+"/nope) or correct SHARED_DIR: file does not exist")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Equal(t, dir, c.SharedDir, "a refused SHARED_DIR changes nothing")
}

// writeConf writes dir/vm1.conf with the given text and mode.
func writeConf(t *testing.T, dir, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, "vm1.conf")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	require.NoError(t, os.Chmod(path, mode))
	return path
}

func TestLoadReadsTheInstanceFile(t *testing.T) {
	dir := t.TempDir()
	share := t.TempDir()
	path := writeConf(t, dir, "SHARED_DIR="+share+"\nCACHE=none\n", 0o644)

	c, err := Load(dir, "vm1")
	require.NoError(t, err)
	assert.Equal(t, &Config{Instance: "vm1", Path: path, SharedDir: share, Cache: "never", Flavor: "auto", Front: "auto",
		lines:  map[string]int{"SHARED_DIR": 1, "CACHE": 2},
		values: map[string]string{"SHARED_DIR": share, "CACHE": "none"}}, c)
	assert.Equal(t, 2, c.Line("CACHE"))
	assert.Equal(t, 0, c.Line("XATTR"))
}

func TestLoadFollowsASymlinkToAFileOfTheFolder(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "SHARED_DIR="+dir+"\n", 0o600)
	require.NoError(t, os.Symlink("vm1.conf", filepath.Join(dir, "vm2.conf")))
	c, err := Load(dir, "vm2")
	require.NoError(t, err)
	assert.Equal(t, "vm2", c.Instance)
}

// A config linked to a file outside the folder is refused before it is
// read, so no error can quote what that file holds (its first line would be
// "no = in ..." for /etc/shadow).
func TestLoadRefusesASymlinkOutOfTheFolderWithoutQuotingIt(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	secret := filepath.Join(other, "shadow")
	require.NoError(t, os.WriteFile(secret, []byte("root:$y$secrethash:19000:0:99999:7:::\n"), 0o600))
	link := filepath.Join(dir, "vm1.conf")
	require.NoError(t, os.Symlink(secret, link))
	_, err := Load(dir, "vm1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), link+": is a symbolic link to "+secret+", outside "+dir)
	assert.NotContains(t, err.Error(), "secrethash")

	// Through a link to a folder outside, too.
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink(other, filepath.Join(dir, "sub")))
	require.NoError(t, os.Symlink("sub/shadow", link))
	_, err = Load(dir, "vm1")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secrethash")
}

func TestLoadRefusesAHardLinkWithoutQuotingIt(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "shadow")
	require.NoError(t, os.WriteFile(secret, []byte("root:$y$secrethash:19000:0:99999:7:::\n"), 0o600))
	require.NoError(t, os.Link(secret, filepath.Join(dir, "vm1.conf")))
	_, err := Load(dir, "vm1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has 2 hard links")
	assert.NotContains(t, err.Error(), "secrethash")
}

func TestReadLeavesSharedDirToTheCaller(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "SHARED_DIR=/mnt/late-nfs-mount\n", 0o644)
	c, err := Read(dir, "vm1")
	require.NoError(t, err)
	assert.Equal(t, "/mnt/late-nfs-mount", c.SharedDir)
	_, err = Load(dir, "vm1")
	assert.ErrorContains(t, err, "does not exist")
}

func TestParseSocketKeysAndStandby(t *testing.T) {
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSOCKET_USER=qemu\nSOCKET_GROUP=64055\nSOCKET_MODE=0640\nSTANDBY=yes\n"), file)
	require.NoError(t, err)
	assert.Equal(t, "qemu", c.SocketUser)
	assert.Equal(t, "64055", c.SocketGroup)
	assert.Equal(t, ptr(uint32(0o640)), c.SocketMode)
	assert.True(t, c.Standby)

	c, err = Parse(strings.NewReader("SHARED_DIR=/srv\n"), file)
	require.NoError(t, err)
	assert.Equal(t, "", c.SocketUser)
	assert.Nil(t, c.SocketMode)
	assert.False(t, c.Standby)

	for _, line := range []string{"SOCKET_USER=-x", "SOCKET_GROUP=a b", "SOCKET_GROUP=%i", "SOCKET_USER=4294967295",
		"SOCKET_MODE=0999", "SOCKET_MODE=1777", "SOCKET_MODE=rw", "SOCKET_MODE=-1", "STANDBY=maybe"} {
		_, err := Parse(strings.NewReader("SHARED_DIR=/srv\n"+line+"\n"), file)
		var ce *Error
		require.True(t, errors.As(err, &ce), "%s: %v", line, err)
		assert.Equal(t, 2, ce.Line, line)
	}
}

func TestLoadRefusesAMissingFileWithAnExample(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir, "vm1")
	path := filepath.Join(dir, "vm1.conf")
	assert.EqualError(t, err, path+": no such file: create it for instance vm1, for example:\n\n"+
		"\t# "+path+": virtiofsd@vm1, see virtiofsd-shim(8)\n"+
		"\tSHARED_DIR=/srv/vm1\n"+
		"\t#CACHE=auto")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	var ce *Error
	assert.True(t, errors.As(err, &ce))
}

func TestLoadRefusesABadInstanceBeforeTouchingFiles(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "SHARED_DIR=/\n", 0o644)
	for _, inst := range []string{"", "../vm1", "vm1/../vm1", ".vm1"} {
		_, err := Load(filepath.Join(dir, "sub"), inst)
		var ce *Error
		require.True(t, errors.As(err, &ce), "%q: %v", inst, err)
		assert.Contains(t, err.Error(), "instance name")
	}
}

func TestLoadRefusesAFileOthersCanWrite(t *testing.T) {
	for _, mode := range []os.FileMode{0o664, 0o646, 0o666} {
		dir := t.TempDir()
		path := writeConf(t, dir, "SHARED_DIR=/\n", mode)
		_, err := Load(dir, "vm1")
		assert.EqualError(t, err, fmt.Sprintf("%s: writable by group or others (mode %04o): "+
			"anyone who can write it chooses what the service runs; run chmod go-w %s", path, mode, path))
	}
}

func TestLoadRefusesAFolderOthersCanWrite(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "SHARED_DIR=/\n", 0o644)
	require.NoError(t, os.Chmod(dir, 0o777))
	_, err := Load(dir, "vm1")
	assert.EqualError(t, err, dir+": writable by group or others (mode 0777): anyone who can write it chooses what the service runs; run chmod go-w "+dir)

	// With the sticky bit (like /tmp) others cannot replace our file.
	require.NoError(t, os.Chmod(dir, 0o777|os.ModeSticky))
	_, err = Load(dir, "vm1")
	assert.NoError(t, err)
}

func TestLoadRefusesAFileOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	path := writeConf(t, dir, "SHARED_DIR=/\n", 0o644)
	require.NoError(t, os.Chown(path, 65534, 65534))
	_, err := Load(dir, "vm1")
	assert.EqualError(t, err, path+": owned by uid 65534, not root: whoever owns it chooses what the service runs as root; run chown root: "+path)

	require.NoError(t, os.Chown(path, 0, 0))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	_, err = Load(dir, "vm1")
	assert.EqualError(t, err, dir+": owned by uid 65534, not root: whoever owns it chooses what the service runs as root; run chown root: "+dir)
}

func TestLoadRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm1.conf")
	require.NoError(t, syscall.Mkfifo(path, 0o600))
	_, err := Load(dir, "vm1") // must not hang on the FIFO
	assert.EqualError(t, err, path+": is not a regular file (p---------): the configuration must be a plain text file")

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o700))
	_, err = Load(dir, "vm1")
	assert.EqualError(t, err, path+": is not a regular file (d---------): the configuration must be a plain text file")
}

func TestLoadChecksSharedDir(t *testing.T) {
	dir := t.TempDir()
	share := t.TempDir()
	notDir := filepath.Join(share, "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o600))

	path := writeConf(t, dir, "# vm1\nSHARED_DIR="+share+"/missing\n", 0o644)
	_, err := Load(dir, "vm1")
	assert.EqualError(t, err, path+":2: SHARED_DIR "+share+"/missing does not exist: create it (mkdir -p "+share+"/missing) or correct SHARED_DIR: file does not exist")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	writeConf(t, dir, "CACHE=auto\nSHARED_DIR="+notDir+"\n", 0o644)
	_, err = Load(dir, "vm1")
	assert.EqualError(t, err, path+":2: SHARED_DIR "+notDir+" is not a directory: set SHARED_DIR to the directory to share")

	writeConf(t, dir, "SHARED_DIR=relative\n", 0o644)
	_, err = Load(dir, "vm1")
	assert.ErrorContains(t, err, path+":1: SHARED_DIR=relative: not an absolute path")
}

func TestStandbyNoOrEmptyKeepsNoVirtiofsdWaiting(t *testing.T) {
	for _, line := range []string{"STANDBY=no", "STANDBY=false", "STANDBY=0", "STANDBY="} {
		c, err := Parse(strings.NewReader("SHARED_DIR=/srv\n"+line+"\n"), file)
		require.NoError(t, err, line)
		assert.False(t, c.Standby, line)
	}
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSTANDBY=yes\n"), file)
	require.NoError(t, err)
	require.NoError(t, c.Set("STANDBY", "no"))
	assert.False(t, c.Standby, "an override of no turns the file's yes off")
}

func TestSocketAccountsAcceptWhatUseraddAccepts(t *testing.T) {
	longest := "a" + strings.Repeat("b", 30) // 31 characters, useradd's limit
	for _, v := range []string{"kvm", "_kvm", "Kvm", "zZ", "libvirt-qemu", "a.b_c-1", "a0", "a9", longest, "0", "65534", "4294967293"} {
		c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSOCKET_USER="+v+"\nSOCKET_GROUP="+v+"\n"), file)
		require.NoError(t, err, v)
		assert.Equal(t, v, c.SocketUser, v)
		assert.Equal(t, v, c.SocketGroup, v)
	}
}

func TestSocketAccountsRefuseWhatUseraddRefuses(t *testing.T) {
	for _, v := range []string{
		"a" + strings.Repeat("b", 31), // one past the limit
		"1kvm", ".kvm", "-kvm",        // a name starts with a letter or '_'
		"kv m", "kvm:", "kvé",
		"65535", "4294967294", "4294967295", // ids systemd reserves
	} {
		for _, key := range []string{"SOCKET_USER", "SOCKET_GROUP"} {
			_, err := Parse(strings.NewReader("SHARED_DIR=/srv\n"+key+"="+v+"\n"), file)
			var ce *Error
			require.True(t, errors.As(err, &ce), "%s=%s: %v", key, v, err)
			assert.Equal(t, 2, ce.Line, v)
			assert.Contains(t, ce.Error(), key)
		}
	}
}

func TestSocketModeAcceptsEveryModeUpTo0777(t *testing.T) {
	for v, want := range map[string]uint32{"0777": 0o777, "777": 0o777, "0000": 0, "0600": 0o600, "0": 0} {
		c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSOCKET_MODE="+v+"\n"), file)
		require.NoError(t, err, v)
		assert.Equal(t, ptr(want), c.SocketMode, v)
	}
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSOCKET_MODE=0640\n"), file)
	require.NoError(t, err)
	require.NoError(t, c.Set("SOCKET_MODE", ""))
	assert.Nil(t, c.SocketMode, "an empty SOCKET_MODE= goes back to the default")
	for _, v := range []string{"01000", "1000", "0o777", "+777"} {
		_, err := Parse(strings.NewReader("SHARED_DIR=/srv\nSOCKET_MODE="+v+"\n"), file)
		assert.ErrorContains(t, err, "0000 to 0777", v)
	}
}

// A SHARED_DIR below a file is refused with the system's reason.
func TestLoadRefusesASharedDirBelowAFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	path := writeConf(t, dir, "SHARED_DIR="+file+"/sub\n", 0o644)
	_, err := Load(dir, "vm1")
	assert.EqualError(t, err, path+":1: SHARED_DIR "+file+"/sub: not a directory")
}

// An override's error quotes the value when it has spaces, quotes or
// control characters, so that the admin sees exactly what was given.
func TestSetQuotesAValueThatNeedsIt(t *testing.T) {
	c, err := Parse(strings.NewReader("SHARED_DIR=/srv\n"), file)
	require.NoError(t, err)
	for value, shown := range map[string]string{
		"sometimes":  "CACHE=sometimes: ",
		"some times": `CACHE="some times": `,
		`"sometimes`: `CACHE="\"sometimes": `,
		`some'time`:  `CACHE="some'time": `,
		`some\time`:  `CACHE="some\\time": `,
		"some\x7f":   `CACHE="some\x7f": `,
	} {
		assert.ErrorContains(t, c.Set("CACHE", value), shown, value)
	}
}
