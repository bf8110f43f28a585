package virtiofsd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// VersionCache remembers what DetectVersion learnt of a binary (its flavor,
// version and --print-capabilities features), keyed by its
// identity on disk (device, inode, size, mtime), so that a session does not
// pay for running `virtiofsd --version` again. A replaced binary (a package
// upgrade) has a new identity and is asked again. Errors reading or writing
// the cache only cost the detection; they are never returned.
type VersionCache struct {
	Dir string // e.g. /run/virtiofsd-shim; "" disables the cache
}

// Detect returns the cached version of path, or detects and caches it.
func (c VersionCache) Detect(ctx context.Context, path string) (Version, error) {
	if c.Dir == "" {
		return DetectVersion(ctx, path)
	}
	id, err := identity(path)
	if err != nil {
		return DetectVersion(ctx, path)
	}
	sum := sha256.Sum256([]byte(path))
	file := filepath.Join(c.Dir, "version-"+hex.EncodeToString(sum[:8]))
	if b, err := os.ReadFile(file); err == nil {
		if f := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); len(f) == 4 && f[0] == id {
			if fl, err := ParseFlavor(f[1]); err == nil && fl != Auto {
				return Version{Flavor: fl, Number: f[2], Features: decodeFeatures(f[3])}, nil
			}
		}
	}
	v, err := DetectVersion(ctx, path)
	if err != nil {
		return v, err
	}
	if os.MkdirAll(c.Dir, 0o755) == nil {
		tmp, err := os.CreateTemp(c.Dir, ".version-*")
		if err == nil {
			_, werr := fmt.Fprintf(tmp, "%s\n%s\n%s\n%s\n", id, v.Flavor, v.Number, encodeFeatures(v.Features))
			if cerr := tmp.Close(); werr == nil && cerr == nil {
				_ = os.Rename(tmp.Name(), file) // atomic: concurrent sessions see old or new
			}
			os.Remove(tmp.Name())
		}
	}
	return v, nil
}

// encodeFeatures writes the features as one line: "?" when the binary did
// not answer --print-capabilities, else "features:" and a comma-separated
// list.
func encodeFeatures(f []string) string {
	if f == nil {
		return "?"
	}
	return "features:" + strings.Join(f, ",")
}

func decodeFeatures(s string) []string {
	list, ok := strings.CutPrefix(s, "features:")
	if !ok {
		return nil
	}
	if list == "" {
		return []string{}
	}
	return strings.Split(list, ",")
}

func identity(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%d:%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec), nil
}
