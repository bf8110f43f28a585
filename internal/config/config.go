package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kballard/go-shellquote"
)

// DefaultDir is the folder of the configuration files.
const DefaultDir = "/etc/virtiofsd"

// maxFileSize bounds what Parse reads; a configuration is a few lines.
const maxFileSize = 1 << 20

// Config is what one instance wants. The zero value of a field means "not
// set": the launcher then uses virtiofsd's own default, except where the key
// table says otherwise.
type Config struct {
	Instance string // the instance name, "" when not loaded by Load
	Path     string // the file read, or the name given to Parse

	SharedDir         string        // SHARED_DIR, absolute; always set
	Cache             string        // CACHE: "", auto, always, never or metadata
	Virtiofsd         string        // VIRTIOFSD, absolute, or ""
	Flavor            string        // FLAVOR: auto, c or rust; always set
	Sandbox           string        // SANDBOX: "", namespace, chroot or none
	ThreadPoolSize    *int          // THREAD_POOL_SIZE, >= 0, or nil
	Xattr             *bool         // XATTR, or nil
	AnnounceSubmounts *bool         // ANNOUNCE_SUBMOUNTS, or nil
	Readonly          *bool         // READONLY, or nil
	ReadyTimeout      time.Duration // READY_TIMEOUT, > 0, or 0
	StopTimeout       time.Duration // STOP_TIMEOUT, > 0, or 0
	LogLevel          string        // LOG_LEVEL: "", info, debug or trace (Rust only)
	UIDMap            *IDMap        // UID_MAP (rootless, Rust only), or nil
	GIDMap            *IDMap        // GID_MAP (rootless, Rust only), or nil
	ExtraArgs         []string      // EXTRA_ARGS split into arguments, or nil

	// What systemd applies through the generator (see package generator).
	SocketUser  string  // SOCKET_USER: a user name or uid, or "" (root)
	SocketGroup string  // SOCKET_GROUP: a group name or gid, or "" (root)
	SocketMode  *uint32 // SOCKET_MODE: permission bits, at most 0777, or nil (0660)
	Standby     bool    // STANDBY: keep a virtiofsd waiting before the VM connects

	// Live migration and file handles (Rust virtiofsd only; see
	// virtiofsd.Requirements for the versions that have them).
	MigrationMode          string // MIGRATION_MODE: "", find-paths or file-handles
	MigrationOnError       string // MIGRATION_ON_ERROR: "", abort or guest-error
	MigrationVerifyHandles *bool  // MIGRATION_VERIFY_HANDLES, or nil
	MigrationConfirmPaths  *bool  // MIGRATION_CONFIRM_PATHS, or nil
	InodeFileHandles       string // INODE_FILE_HANDLES: "", never, prefer or mandatory

	// More of virtiofsd's options.
	PosixACL        string   // POSIX_ACL: "", never, auto or always (yes = always, no = never)
	SecurityLabel   string   // SECURITY_LABEL: the same
	TranslateUID    []string // TRANSLATE_UID: virtiofsd --translate-uid values, or nil
	TranslateGID    []string // TRANSLATE_GID: the same for --translate-gid
	AllowMmap       *bool    // ALLOW_MMAP, or nil
	Writeback       *bool    // WRITEBACK, or nil
	Readdirplus     *bool    // READDIRPLUS, or nil (no gives --no-readdirplus)
	PreserveNoatime *bool    // PRESERVE_NOATIME, or nil

	// Front is FRONT: auto (the default: the shim is the VM's end of the
	// socket where virtiofsd can save its state) or no; always set.
	Front string

	lines  map[string]int    // the line of each key in Path
	values map[string]string // the value each key has in Path, as written
}

// Value returns the value key has in Path, as written, or "" when Path
// does not set it.
func (c *Config) Value(key string) string { return c.values[key] }

// Line returns the line of Path that set key, or 0.
func (c *Config) Line(key string) int { return c.lines[key] }

// key is one recognised configuration key.
type key struct {
	name string
	// set validates value and stores it in c; an empty value unsets the
	// key. Its error says what is wrong with the value, without file or key.
	set func(c *Config, value string) error
}

var keys = []key{
	{"ALLOW_MMAP", func(c *Config, v string) error { return setBool(&c.AllowMmap, v) }},
	{"ANNOUNCE_SUBMOUNTS", func(c *Config, v string) error { return setBool(&c.AnnounceSubmounts, v) }},
	{"CACHE", setCache},
	{"EXTRA_ARGS", setExtraArgs},
	{"FLAVOR", func(c *Config, v string) error {
		if v == "" {
			v = "auto"
		}
		return setEnum(&c.Flavor, v, "auto", "c", "rust")
	}},
	{"FRONT", func(c *Config, v string) error {
		if v == "" {
			v = "auto"
		}
		return setEnum(&c.Front, v, "auto", "no")
	}},
	{"GID_MAP", func(c *Config, v string) error { return setIDMap(&c.GIDMap, v) }},
	{"INODE_FILE_HANDLES", func(c *Config, v string) error {
		return setEnum(&c.InodeFileHandles, v, "never", "prefer", "mandatory")
	}},
	{"LOG_LEVEL", func(c *Config, v string) error { return setEnum(&c.LogLevel, v, "info", "debug", "trace") }},
	{"MIGRATION_CONFIRM_PATHS", func(c *Config, v string) error { return setBool(&c.MigrationConfirmPaths, v) }},
	{"MIGRATION_MODE", func(c *Config, v string) error { return setEnum(&c.MigrationMode, v, "find-paths", "file-handles") }},
	{"MIGRATION_ON_ERROR", func(c *Config, v string) error { return setEnum(&c.MigrationOnError, v, "abort", "guest-error") }},
	{"MIGRATION_VERIFY_HANDLES", func(c *Config, v string) error { return setBool(&c.MigrationVerifyHandles, v) }},
	{"POSIX_ACL", func(c *Config, v string) error { return setNegotiation(&c.PosixACL, v) }},
	{"PRESERVE_NOATIME", func(c *Config, v string) error { return setBool(&c.PreserveNoatime, v) }},
	{"READDIRPLUS", func(c *Config, v string) error { return setBool(&c.Readdirplus, v) }},
	{"READONLY", func(c *Config, v string) error { return setBool(&c.Readonly, v) }},
	{"READY_TIMEOUT", func(c *Config, v string) error { return setDuration(&c.ReadyTimeout, v) }},
	{"SANDBOX", func(c *Config, v string) error { return setEnum(&c.Sandbox, v, "namespace", "chroot", "none") }},
	{"SECURITY_LABEL", func(c *Config, v string) error { return setNegotiation(&c.SecurityLabel, v) }},
	{"SHARED_DIR", setSharedDir},
	{"SOCKET_GROUP", func(c *Config, v string) error { return setAccount(&c.SocketGroup, v, "group") }},
	{"SOCKET_MODE", setSocketMode},
	{"SOCKET_USER", func(c *Config, v string) error { return setAccount(&c.SocketUser, v, "user") }},
	{"STANDBY", func(c *Config, v string) error {
		var b *bool
		if err := setBool(&b, v); err != nil {
			return err
		}
		c.Standby = b != nil && *b
		return nil
	}},
	{"STOP_TIMEOUT", func(c *Config, v string) error { return setDuration(&c.StopTimeout, v) }},
	{"THREAD_POOL_SIZE", setThreadPoolSize},
	{"TRANSLATE_GID", func(c *Config, v string) error { return setTranslate(&c.TranslateGID, v) }},
	{"TRANSLATE_UID", func(c *Config, v string) error { return setTranslate(&c.TranslateUID, v) }},
	{"UID_MAP", func(c *Config, v string) error { return setIDMap(&c.UIDMap, v) }},
	{"VIRTIOFSD", setVirtiofsd},
	{"WRITEBACK", func(c *Config, v string) error { return setBool(&c.Writeback, v) }},
	{"XATTR", func(c *Config, v string) error { return setBool(&c.Xattr, v) }},
}

func lookupKey(name string) (key, bool) {
	i, ok := slices.BinarySearchFunc(keys, name, func(k key, name string) int { return strings.Compare(k.name, name) })
	if !ok {
		return key{}, false
	}
	return keys[i], true
}

func knownKeys() string {
	return strings.Join(Keys(), ", ")
}

// Parse reads a configuration in systemd EnvironmentFile syntax from r and
// validates every value, without looking at the file system: SHARED_DIR must
// be absolute but need not exist (Load checks that). name is the file name
// used in errors and stored in Config.Path. Every problem of the file is
// reported, each an *Error naming name, line and key: one alone, or all of
// them in line order as Errors (see Problems).
func Parse(r io.Reader, name string) (*Config, error) {
	c, _, err := parse(r, name)
	return c, err
}

// parse is Parse that also returns the line of each key.
func parse(r io.Reader, name string) (*Config, map[string]int, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, nil, &Error{File: name, Msg: fmt.Sprintf("read: %v", err), Err: err}
	}
	if len(data) > maxFileSize {
		return nil, nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d bytes: this is not a configuration file", maxFileSize)}
	}
	assignments, err := parseEnvFile(data, name)
	if err != nil {
		return nil, nil, err
	}

	c := &Config{Path: name, Flavor: "auto", Front: "auto"}
	lines := make(map[string]int) // key -> line
	values := make(map[string]string)
	var errs []*Error         // every line's problem, in order
	sharedDirRefused := false // a line meant SHARED_DIR and was refused: no need to ask for one
	for _, a := range assignments {
		k, ok := lookupKey(a.key)
		if !ok {
			msg, near := unknownKey(a.key)
			sharedDirRefused = sharedDirRefused || near == "SHARED_DIR" || strings.Contains(strings.ToUpper(a.key), "SHARED_DIR")
			errs = append(errs, &Error{File: name, Line: a.line, Key: a.key, Code: CodeUnknownKey, Msg: msg})
			continue
		}
		if first, dup := lines[a.key]; dup {
			errs = append(errs, &Error{File: name, Line: a.line, Key: a.key, Code: CodeDuplicateKey,
				Msg: fmt.Sprintf("duplicate key %s, already set at %s:%d: keep one of the two lines", a.key, name, first)})
			continue
		}
		lines[a.key] = a.line
		values[a.key] = a.value
		if err := k.set(c, a.value); err != nil {
			msg := fmt.Sprintf("%s=%s: %v", a.key, quoteValue(a.value), err)
			if strings.Contains(a.value, "#") {
				msg += ` ("#" after a value is part of it, not a comment: put comments on lines of their own)`
			}
			errs = append(errs, &Error{File: name, Line: a.line, Key: a.key, Code: CodeBadValue, Msg: msg})
			sharedDirRefused = sharedDirRefused || a.key == "SHARED_DIR"
		}
	}
	if len(errs) == 0 {
		// Combinations are judged on values that are all valid.
		c.lines = lines
		if err := c.checkCombinations(); err != nil {
			return nil, nil, err
		}
		c.lines = nil // set below, once valid
	}
	if c.SharedDir == "" && !sharedDirRefused {
		errs = append(errs, &Error{File: name, Key: "SHARED_DIR", Line: lines["SHARED_DIR"], Code: CodeMissingShared,
			Msg: "SHARED_DIR is required: add a line such as SHARED_DIR=/srv/vm1 naming the directory to share"})
	}
	if err := joinErrors(errs); err != nil {
		return nil, nil, err
	}
	c.lines, c.values = lines, values
	return c, lines, nil
}

// Set validates value as if KEY=VALUE were a line of the file and stores it,
// replacing the file's value: it is how command-line flags override the file.
// An empty value unsets the key (FLAVOR goes back to auto; SHARED_DIR cannot
// be unset). A SHARED_DIR is also checked on the file system, as Load does.
// Errors are *Error values.
func (c *Config) Set(name, value string) error {
	k, ok := lookupKey(name)
	if !ok {
		msg, _ := unknownKey(name)
		return &Error{Key: name, Code: CodeUnknownKey, Msg: msg}
	}
	if name == "SHARED_DIR" && value == "" {
		return &Error{Key: name, Msg: "SHARED_DIR cannot be empty: give the directory to share"}
	}
	next := *c // a refused value changes nothing
	if err := k.set(&next, value); err != nil {
		return &Error{Key: name, Code: CodeBadValue, Msg: fmt.Sprintf("%s=%s: %v", name, quoteValue(value), err)}
	}
	if name == "SHARED_DIR" {
		if err := checkSharedDir(next.SharedDir); err != nil {
			return &Error{Key: name, Msg: err.Error(), Err: errors.Unwrap(err)}
		}
	}
	if err := next.checkCombinations(); err != nil {
		return err
	}
	*c = next
	return nil
}

// Load reads and validates dir/<instance>.conf of a system instance: Read,
// and SHARED_DIR must be an existing directory.
func Load(dir, instance string) (*Config, error) { return LoadIn(System, dir, instance) }

// LoadIn is Load for an instance of scope s: ReadIn, and SHARED_DIR must be
// an existing directory.
func LoadIn(s Scope, dir, instance string) (*Config, error) {
	c, err := ReadIn(s, dir, instance)
	if err != nil {
		return nil, err
	}
	if err := checkSharedDir(c.SharedDir); err != nil {
		return nil, &Error{File: c.Path, Line: c.Line("SHARED_DIR"), Key: "SHARED_DIR", Code: CodeMissingShared, Msg: err.Error(), Err: errors.Unwrap(err)}
	}
	return c, nil
}

// Read is ReadIn for a system instance.
func Read(dir, instance string) (*Config, error) { return ReadIn(System, dir, instance) }

// ReadIn reads and validates dir/<instance>.conf of an instance of scope s
// without looking at SHARED_DIR on the file system (the generator runs before
// late mounts are up). Besides what Parse checks, it refuses an invalid
// instance name (see ValidInstance), a file or folder that group or others
// may write, a file or folder owned by someone the scope does not trust
// (System: root or the current user, since the file chooses what runs as
// root; User: the current user alone), anything but a regular file, a
// symbolic link that leads out of dir, and a file with more than one hard
// link: what it reads is a file of the folder, never a file elsewhere that an
// error could quote (/etc/shadow). A missing file gives an *Error wrapping
// fs.ErrNotExist whose message shows an example.
func ReadIn(s Scope, dir, instance string) (*Config, error) {
	if err := ValidInstance(instance); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, instance+".conf")
	missing := func(err error) error {
		return &Error{File: path, Err: err, Msg: fmt.Sprintf(
			"no such file: create it for instance %s, for example:\n\n"+
				"\t# %s: virtiofsd@%s, see virtiofsd-shim(8)\n"+
				"\tSHARED_DIR=/srv/%s\n"+
				"\t#CACHE=auto", instance, path, instance, instance)}
	}
	real, err := confined(dir, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing(err)
	}
	if err != nil {
		return nil, err
	}

	// O_NONBLOCK: opening a FIFO must not hang; it is refused below.
	// O_NOFOLLOW: what confined checked is what is opened.
	f, err := os.OpenFile(real, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missing(err)
	}
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("open: %v", errors.Unwrap(err)), Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("stat: %v", err), Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{File: path, Msg: fmt.Sprintf("is not a regular file (%s): the configuration must be a plain text file", fi.Mode().Type())}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return nil, &Error{File: path, Msg: fmt.Sprintf(
			"has %d hard links: it may be another file than a configuration; copy it instead (cp --remove-destination)", st.Nlink)}
	}
	if err := checkOwnerAndMode(s, path, fi, "chmod go-w "+path); err != nil {
		return nil, err
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("stat folder: %v", err), Err: err}
	}
	if err := checkOwnerAndMode(s, filepath.Dir(path), di, "chmod go-w "+filepath.Dir(path)); err != nil {
		return nil, err
	}

	c, _, err := parse(f, path)
	if err != nil {
		return nil, err
	}
	c.Instance = instance
	return c, nil
}

// confined returns the file path names, following symbolic links, and
// refuses a link whose target is not in dir itself. The error names the
// link's target, never its contents.
func confined(dir, path string) (string, error) {
	li, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if li.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", &Error{File: path, Msg: fmt.Sprintf("resolve folder: %v", err), Err: err}
	}
	if filepath.Dir(real) != realDir {
		return "", &Error{File: path, Msg: fmt.Sprintf(
			"is a symbolic link to %s, outside %s: a configuration must be a file of that folder (a link to another file of the folder is fine); "+
				"replace the link with a copy", real, dir)}
	}
	return real, nil
}

// checkOwnerAndMode refuses a file or folder that someone the scope does not
// trust could change (see Scope.trusted). A folder with the sticky bit (like
// /tmp) may be writable by others: they cannot replace a file they do not own
// there.
func checkOwnerAndMode(s Scope, path string, fi fs.FileInfo, fix string) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		euid := uint32(os.Geteuid())
		if !s.trusted(st.Uid, euid) {
			return &Error{File: path, Msg: s.ownerFix(path, st.Uid, euid)}
		}
	}
	perm := fi.Mode().Perm()
	if perm&0o022 != 0 && !(fi.IsDir() && fi.Mode()&fs.ModeSticky != 0) {
		return &Error{File: path, Msg: fmt.Sprintf(
			"writable by group or others (mode %04o): anyone who can write it chooses what the service runs; run %s",
			perm, fix)}
	}
	return nil
}

// checkSharedDir checks that dir exists and is a directory.
func checkSharedDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("SHARED_DIR %s does not exist: create it (mkdir -p %s) or correct SHARED_DIR: %w", dir, dir, fs.ErrNotExist)
	case err != nil:
		return fmt.Errorf("SHARED_DIR %s: %w", dir, errors.Unwrap(err))
	case !fi.IsDir():
		return fmt.Errorf("SHARED_DIR %s is not a directory: set SHARED_DIR to the directory to share", dir)
	}
	return nil
}

// unknownKey is the message for an unknown key, and the known key it
// suggests instead ("" when none is close: the message then lists them all).
func unknownKey(name string) (msg, near string) {
	msg = "unknown key " + quoteKey(name)
	switch {
	case strings.HasPrefix(name, "\ufeff"):
		msg += " (the file starts with a byte order mark: save it as UTF-8 without BOM)"
	case strings.HasPrefix(name, "export "):
		msg += " (drop \"export\": this is a systemd environment file, not a shell script)"
	default:
		if near = nearestKey(name); near != "" {
			return msg + ": did you mean " + near + "?", near
		}
	}
	return msg + " (known: " + knownKeys() + ")", ""
}

// nearestKey is the known key closest to name, ignoring case, when it is
// within two edits and those are fewer than a third of name: SHARD_DIR gives
// SHARED_DIR, cache gives CACHE, NO_SUCH_KEY gives "".
func nearestKey(name string) string {
	upper := strings.ToUpper(name)
	best, bestDist := "", math.MaxInt
	for _, k := range keys {
		if d := editDistance(upper, k.name); d < bestDist {
			best, bestDist = k.name, d
		}
	}
	if bestDist > 2 || bestDist*3 >= len(name) && bestDist > 0 {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// quoteKey returns name as is when it looks like a key, else quoted.
func quoteKey(name string) string {
	if name != "" && strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == "" {
		return name
	}
	return strconv.Quote(name)
}

// quoteValue returns v as is when it needs no quoting, else quoted.
func quoteValue(v string) string {
	if v != "" && strings.IndexFunc(v, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '\'' || r == '\\' || r >= 0x7f
	}) < 0 {
		return v
	}
	return strconv.Quote(v)
}

func setEnum(dst *string, v string, allowed ...string) error {
	if v != "" && !slices.Contains(allowed, v) {
		return fmt.Errorf("not allowed (allowed: %s)", strings.Join(allowed, ", "))
	}
	*dst = v
	return nil
}

func setCache(c *Config, v string) error {
	switch v {
	case "none": // the C virtiofsd's spelling
		v = "never"
	case "", "auto", "always", "never", "metadata":
	default:
		return errors.New("not allowed (allowed: auto, always, never, none (same as never), metadata (Rust virtiofsd only))")
	}
	c.Cache = v
	return nil
}

func setBool(dst **bool, v string) error {
	var b bool
	switch v {
	case "":
		*dst = nil
		return nil
	case "yes", "true", "1":
		b = true
	case "no", "false", "0":
		b = false
	default:
		return errors.New("not a boolean (allowed: yes, no, true, false, 1, 0)")
	}
	*dst = &b
	return nil
}

func setDuration(dst *time.Duration, v string) error {
	const allowed = "(allowed: a positive Go duration such as 10s, 1m30s, 500ms, or whole seconds such as 10)"
	if v == "" {
		*dst = 0
		return nil
	}
	var d time.Duration
	if strings.Trim(v, "0123456789") == "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > math.MaxInt64/int64(time.Second) {
			return fmt.Errorf("too large %s", allowed)
		}
		d = time.Duration(n) * time.Second
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("not a duration %s", allowed)
		}
	}
	if d <= 0 {
		return fmt.Errorf("not positive %s", allowed)
	}
	*dst = d
	return nil
}

func setThreadPoolSize(c *Config, v string) error {
	if v == "" {
		c.ThreadPoolSize = nil
		return nil
	}
	n, err := strconv.ParseUint(v, 10, 31)
	if err != nil {
		return fmt.Errorf("not a whole number from 0 to %d", math.MaxInt32)
	}
	i := int(n)
	c.ThreadPoolSize = &i
	return nil
}

func setSharedDir(c *Config, v string) error {
	if v == "" {
		c.SharedDir = ""
		return nil
	}
	if !filepath.IsAbs(v) {
		return errors.New("not an absolute path: write the full path of the directory to share, starting with / (e.g. SHARED_DIR=/srv/vm1)")
	}
	c.SharedDir = v
	return nil
}

// setAccount takes a user or group name (what useradd and groupadd accept,
// and systemd's SocketUser=/SocketGroup=) or a numeric id.
func setAccount(dst *string, v, what string) error {
	if v == "" {
		*dst = ""
		return nil
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		if n >= math.MaxUint32-1 || n == 65535 {
			return fmt.Errorf("not a valid %s id (0 to 4294967293, not 65535)", what)
		}
		*dst = v
		return nil
	}
	ok := len(v) <= 31
	for i, r := range v {
		ok = ok && (r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') ||
			(i > 0 && ((r >= '0' && r <= '9') || r == '-' || r == '.')))
	}
	if !ok {
		return fmt.Errorf("not a %s name or id (letters, digits, '_', '-', '.', starting with a letter or '_', at most 31 characters), e.g. kvm or 64055", what)
	}
	*dst = v
	return nil
}

// setSocketMode takes octal permission bits, like systemd's SocketMode=.
func setSocketMode(c *Config, v string) error {
	if v == "" {
		c.SocketMode = nil
		return nil
	}
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 || strings.TrimLeft(v, "01234567") != "" {
		return errors.New("not octal permission bits from 0000 to 0777, e.g. 0660 (owner and group read and write)")
	}
	m := uint32(n)
	c.SocketMode = &m
	return nil
}

func setVirtiofsd(c *Config, v string) error {
	if v != "" && !filepath.IsAbs(v) {
		return errors.New("not an absolute path: write the full path of the virtiofsd binary (e.g. VIRTIOFSD=/usr/libexec/virtiofsd or /usr/lib/qemu/virtiofsd)")
	}
	c.Virtiofsd = v
	return nil
}

func setExtraArgs(c *Config, v string) error {
	// Which arguments virtiofsd may get depends on its flavor: virtiofsd.Args
	// checks them, and the caller reports its error at Line("EXTRA_ARGS").
	args, err := shellquote.Split(v)
	if err != nil {
		return fmt.Errorf("cannot split into arguments (%v): quote with '...' or \"...\" inside the value, "+
			"e.g. EXTRA_ARGS=\"--modcaps=-mknod -o 'opt=a b'\"", err)
	}
	if len(args) == 0 {
		args = nil
	}
	c.ExtraArgs = args
	return nil
}
