package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Binary identifies the program file a process was started from: the
// path it was started by, its version, and the file's identity then
// (device, inode, size, modification time). An upgrade by a package
// manager puts a new file in place (a new inode); a copy over it changes
// its size or time: either way the file at Path is then no longer the one
// the process runs, which is what "runs an older binary" means here.
type Binary struct {
	Path    string    `json:"path"`
	Version string    `json:"version,omitempty"`
	Device  uint64    `json:"device"`
	Inode   uint64    `json:"inode"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
}

// Identify records the file at path (through symbolic links) as the
// program of version about to be started from it.
func Identify(path, version string) (*Binary, error) { return identify(path, path, version) }

// Self records the running program (/proc/self/exe, the very file it was
// started from), by the path it was started by.
func Self(version string) (*Binary, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("identify the running program: %w", err)
	}
	return identify(path, "/proc/self/exe", version)
}

func identify(path, file, version string) (*Binary, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("identify the program %s: %w", path, err)
	}
	b := &Binary{Path: path, Version: version, Size: fi.Size(), ModTime: fi.ModTime().UTC()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		b.Device, b.Inode = st.Dev, st.Ino
	}
	return b, nil
}

// Replacement is a program of a record whose file has been replaced since
// it was started.
type Replacement struct {
	Program string // "shim" or "virtiofsd"
	Binary  *Binary
	Reason  string // how its file changed (Binary.Replaced)
}

// Replaced lists the record's programs (the shim, then virtiofsd) whose
// files have been replaced since they were started: the session runs
// binaries older than the installed ones.
func (s *State) Replaced() []Replacement { return s.ReplacedIn("") }

// ReplacedIn is Replaced for a record whose paths are under root as this
// process sees them ("" is /): a list that reads another mount namespace's
// sessions (a test's private systemd) looks at that namespace's files.
func (s *State) ReplacedIn(root string) []Replacement {
	var out []Replacement
	for _, p := range []Replacement{{Program: "shim", Binary: s.Shim}, {Program: "virtiofsd", Binary: s.Virtiofsd}} {
		if replaced, why := p.Binary.ReplacedIn(root); replaced {
			p.Reason = why
			out = append(out, p)
		}
	}
	return out
}

// Replaced tells whether the file at b.Path is no longer the one b
// records (replaced, changed or removed since), and how, in words; a file
// that cannot be read (permission) is not claimed either way.
func (b *Binary) Replaced() (bool, string) { return b.ReplacedIn("") }

// ReplacedIn is Replaced with b.Path under root ("" is /).
func (b *Binary) ReplacedIn(root string) (bool, string) {
	if b == nil || b.Path == "" {
		return false, ""
	}
	now, err := Identify(filepath.Join("/", root, b.Path), "")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, b.Path + " was removed since it was started"
	case err != nil:
		return false, ""
	case now.Device != b.Device || now.Inode != b.Inode:
		return true, b.Path + " was replaced since it was started (another file is installed there)"
	case now.Size != b.Size || !now.ModTime.Equal(b.ModTime):
		return true, b.Path + " was changed since it was started"
	}
	return false, ""
}
