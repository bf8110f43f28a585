package systemtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

// platformsDoc holds the "Tested platforms" table.
const platformsDoc = "docs/development.md"

var versionPattern = regexp.MustCompile(`[0-9]+(\.[0-9]+)*`)

// testedPlatforms reads the "Tested platforms" table of docs/development.md: for each
// distribution ("Debian 13"), the systemd, QEMU and virtiofsd versions it
// names.
func testedPlatforms(t *testing.T) map[string][3]string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(testdir.RepoRoot(), platformsDoc))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n## Tested platforms\n")
	require.True(t, ok, "%s has no Tested platforms section", platformsDoc)
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string][3]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "Debian") {
			continue
		}
		dist := regexp.MustCompile(`^Debian [0-9]+`).FindString(strings.TrimSpace(cells[1]))
		var v [3]string
		for i := range v {
			v[i] = versionPattern.FindString(cells[2+i])
		}
		rows[dist] = v
	}
	return rows
}

// sameVersion says whether the real version is the table's, down to the
// table's precision: 10.0 matches 10.0.13, not 10.1 or 100.
func sameVersion(table, real string) bool {
	return table != "" && (real == table || strings.HasPrefix(real, table+"."))
}

// TestTestedPlatformsTableIsTrue keeps the docs' table true: each leg's
// real systemd, QEMU and virtiofsd say the versions it names.
func TestTestedPlatformsTableIsTrue(t *testing.T) {
	rows := testedPlatforms(t)
	shimbox.Legs(t, func(t *testing.T, leg shimbox.Platform) {
		want, ok := rows[leg.Distribution()]
		require.True(t, ok, "%s's Tested platforms table has no row for %s", platformsDoc, leg.Distribution())
		b := box(t, leg)
		ctx := context.Background()

		systemd := versionPattern.FindString(strings.TrimPrefix(run(t, b, "systemctl", "--version"), "systemd "))
		qemuBin, err := leg.QEMU(ctx)
		require.NoError(t, err)
		if qemuBin == "" {
			qemuBin = "qemu-system-x86_64"
		}
		out, err := exec.CommandContext(ctx, qemuBin, "--version").CombinedOutput()
		require.NoError(t, err, "%s --version: %s", qemuBin, out)
		qemu := versionPattern.FindString(string(out))
		virtiofsd := versionPattern.FindString(run(t, b, leg.Virtiofsd(), "--version"))

		for i, got := range []string{systemd, qemu, virtiofsd} {
			what := []string{"systemd", "QEMU", "virtiofsd"}[i]
			assert.True(t, sameVersion(want[i], got), "%s: %s says %s %s, the leg runs %s", leg.Distribution(), platformsDoc, what, want[i], got)
		}
		t.Logf("%s: systemd %s, QEMU %s, virtiofsd %s", leg.Distribution(), systemd, qemu, virtiofsd)
	})
}
