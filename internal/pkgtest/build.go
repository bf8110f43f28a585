// Package pkgtest builds the .deb and .rpm and tests them as a user gets them.
//
// Its tests build both packages with packaging/build.sh (what `make package`
// runs), check the .deb with lintian and the .rpm with rpm, then, as root,
// install the .deb with dpkg inside a private systemd (sdbox) so that the
// maintainer scripts talk to a real systemd, run the system tests against
// the installed files, upgrade to a newer build with a VM session open,
// remove and purge. The package files land in this machine's /usr and dpkg
// database (the box shares them): run these tests on a throwaway machine,
// such as CI's. The tools they need (lintian, rpm, man, shellcheck) come
// from scripts/deps.sh, which make test runs; without root the tests that
// need dpkg or a box skip, saying why.
package pkgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
