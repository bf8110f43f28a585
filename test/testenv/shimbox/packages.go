package shimbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// Build is one run of packaging/build.sh.
type Build struct {
	Version string // the package version, as dpkg-deb reads it back
	Deb     string // path of the .deb
	RPM     string // path of the .rpm
	Bin     string // the binary that went into both
}

// BuildPackages runs packaging/build.sh of the tree at root with its output
// in dir; version, when not empty, overrides the version from git.
func BuildPackages(ctx context.Context, root, dir, version string) (Build, error) {
	b := Build{Bin: filepath.Join(dir, "bin", "virtiofsd-shim")}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "packaging", "build.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DIST_DIR="+dir, "BIN="+b.Bin)
	if version != "" {
		cmd.Env = append(cmd.Env, "VERSION="+version)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return b, fmt.Errorf("packaging/build.sh: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	for _, p := range strings.Fields(stdout.String()) {
		switch {
		case strings.HasSuffix(p, ".deb"):
			b.Deb = p
		case strings.HasSuffix(p, ".rpm"):
			b.RPM = p
		}
	}
	if b.Deb == "" || b.RPM == "" {
		return b, fmt.Errorf("packaging/build.sh printed no .deb and .rpm paths: %q\n%s", stdout.String(), stderr.String())
	}
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--field", b.Deb, "Version").Output()
	if err != nil {
		return b, fmt.Errorf("read the version of %s: %w", b.Deb, err)
	}
	b.Version = strings.TrimSpace(string(out))
	return b, nil
}

var (
	packagesOnce sync.Once
	packagesErr  error
	builtPkgs    Build
)

// Packages builds the .deb and .rpm of this tree once per test process, as
// `make package` does (the version comes from git), under the folder Binary
// uses, in /var/tmp where boxes see it. Each test process builds in a folder
// of its own, then moves the result to dist/<hash of the .deb>/, so that
// processes of one tree building side by side never replace a package a box
// of another is installing; folders older than a day are removed.
func Packages(ctx context.Context) (Build, error) {
	packagesOnce.Do(func() { builtPkgs, packagesErr = buildShared(ctx) })
	return builtPkgs, packagesErr
}

func buildShared(ctx context.Context) (Build, error) {
	dir, err := buildDir()
	if err != nil {
		return Build{}, err
	}
	tmp, err := os.MkdirTemp(dir, ".dist-")
	if err != nil {
		return Build{}, fmt.Errorf("build the packages: %w", err)
	}
	defer os.RemoveAll(tmp)
	b, err := BuildPackages(ctx, testdir.RepoRoot(), tmp, "")
	if err != nil {
		return Build{}, err
	}
	deb, err := os.ReadFile(b.Deb)
	if err != nil {
		return Build{}, fmt.Errorf("build the packages: %w", err)
	}
	dst, err := storeByContent(filepath.Join(dir, "dist"), deb, func(dst string) error { return os.Rename(tmp, dst) })
	if err != nil {
		return Build{}, fmt.Errorf("build the packages: %w", err)
	}
	for _, p := range []*string{&b.Deb, &b.RPM, &b.Bin} {
		rel, err := filepath.Rel(tmp, *p)
		if err != nil {
			return Build{}, fmt.Errorf("build the packages: %w", err)
		}
		*p = filepath.Join(dst, rel)
	}
	return b, nil
}
