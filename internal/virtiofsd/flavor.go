package virtiofsd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/exitcode"
)

// Flavor is the implementation of virtiofsd: the C one that QEMU shipped up
// to 7.2, or the Rust one from gitlab.com/virtio-fs/virtiofsd.
type Flavor int

// The flavors, and Auto for "ask the binary".
const (
	Auto Flavor = iota
	C
	Rust
)

func (f Flavor) String() string {
	switch f {
	case C:
		return "c"
	case Rust:
		return "rust"
	}
	return "auto"
}

// ParseFlavor reads a flavor name as written in FLAVOR= or --flavor.
func ParseFlavor(s string) (Flavor, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return Auto, nil
	case "c", "qemu":
		return C, nil
	case "rust":
		return Rust, nil
	}
	return Auto, fmt.Errorf("unknown virtiofsd flavor %q (known: auto, c, rust)", s)
}

// ErrBinary is wrapped by errors about the virtiofsd binary itself: missing,
// not executable, or of a flavor that cannot be told.
var ErrBinary = errors.New("virtiofsd binary")

type binaryError struct{ msg string }

func (e *binaryError) Error() string        { return e.msg }
func (e *binaryError) Is(target error) bool { return target == ErrBinary }

// ExitCode is the shim's exit status when the binary is missing or unusable.
func (e *binaryError) ExitCode() int { return exitcode.Unavailable }

// BinaryErrorf makes an error about the virtiofsd binary (errors.Is ErrBinary).
func BinaryErrorf(format string, a ...any) error { return &binaryError{fmt.Sprintf(format, a...)} }

// Where distributions install virtiofsd: the Rust one (Debian 13, Fedora,
// Proxmox; Arch: /usr/lib/virtiofsd), and the C one of QEMU <= 7.2 (Debian
// 12's qemu-system-common).
const (
	RustVirtiofsd     = "/usr/libexec/virtiofsd"
	RustVirtiofsdArch = "/usr/lib/virtiofsd"
	CVirtiofsd        = "/usr/lib/qemu/virtiofsd"
)

// DefaultSearch is where FindBinary looks, in order, before $PATH.
var DefaultSearch = []string{RustVirtiofsd, RustVirtiofsdArch, CVirtiofsd}

// FindBinary returns path when set (checked to be an executable file),
// otherwise the first executable of DefaultSearch, then virtiofsd in $PATH.
func FindBinary(path string) (string, error) {
	if path != "" {
		if !filepath.IsAbs(path) {
			return "", BinaryErrorf("virtiofsd path %q is relative: give an absolute path, e.g. /usr/lib/qemu/virtiofsd", path)
		}
		if err := checkExecutable(path); err != nil {
			return "", err
		}
		return path, nil
	}
	for _, p := range DefaultSearch {
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	return "", BinaryErrorf("no virtiofsd found in %s or $PATH: install it (Debian 12: apt install qemu-system-common; "+
		"Debian 13, Fedora: apt/dnf install virtiofsd) or set VIRTIOFSD= in the instance config", strings.Join(DefaultSearch, ", "))
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return BinaryErrorf("virtiofsd binary %s does not exist: install virtiofsd or fix VIRTIOFSD=/--virtiofsd", path)
	case err != nil:
		return BinaryErrorf("virtiofsd binary %s: %v", path, err)
	case st.IsDir():
		return BinaryErrorf("virtiofsd binary %s is a directory: point VIRTIOFSD=/--virtiofsd at the program", path)
	case st.Mode().Perm()&0o111 == 0:
		return BinaryErrorf("virtiofsd binary %s is not executable (mode %v): chmod +x it or point VIRTIOFSD= elsewhere", path, st.Mode().Perm())
	}
	return nil
}

// Version is what a virtiofsd binary says of itself: --version, and the
// features of --print-capabilities.
type Version struct {
	Flavor Flavor
	Number string // e.g. 7.2.22 or 1.13.2
	// Features are those --print-capabilities lists (e.g. migrate-precopy),
	// empty for the C one; nil when the binary did not answer, and then
	// its version decides what it can do.
	Features []string
}

func (v Version) String() string {
	name := map[Flavor]string{C: "C virtiofsd", Rust: "Rust virtiofsd"}[v.Flavor]
	return strings.TrimSpace(name + " " + v.Number)
}

// ParseVersion tells the flavor from the first line of `virtiofsd --version`:
// "virtiofsd version 7.2.22 (Debian ...)" is C, "virtiofsd 1.13.2" is Rust.
func ParseVersion(out string) (Version, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	fields := strings.Fields(line)
	switch {
	case len(fields) >= 3 && fields[0] == "virtiofsd" && fields[1] == "version":
		return Version{Flavor: C, Number: fields[2]}, nil
	case len(fields) >= 2 && fields[0] == "virtiofsd" && fields[1] != "" && fields[1][0] >= '0' && fields[1][0] <= '9':
		return Version{Flavor: Rust, Number: fields[1]}, nil
	}
	return Version{}, fmt.Errorf("cannot tell the virtiofsd flavor from its --version output %q", line)
}

// DetectVersion runs `path --version` and parses it, then asks the Rust
// one `--print-capabilities`.
func DetectVersion(ctx context.Context, path string) (Version, error) {
	v, err := detectVersion(ctx, path)
	if err != nil {
		return v, err
	}
	if v.Flavor == Rust {
		v.Features = detectFeatures(ctx, path)
	} else {
		v.Features = []string{} // {"type": "fs"}: the C one has no migration
	}
	return v, nil
}

func detectVersion(ctx context.Context, path string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return Version{}, BinaryErrorf("run %s --version: %v (output %q): is it virtiofsd? set FLAVOR=c or rust to skip detection", path, err, firstLine(out.String()))
	}
	v, err := ParseVersion(out.String())
	if err != nil {
		return Version{}, BinaryErrorf("%s: %v: set FLAVOR=c or FLAVOR=rust in the instance config (or --flavor)", path, err)
	}
	return v, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
