package systemtest

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// maxExposure is the `systemd-analyze security` exposure level the hardened
// virtiofsd@.service reaches (9.6 without its sandboxing lines). Issue 13
// traded ProtectKernelTunables=, ProtectKernelModules= and ProtectSystem=
// for their cost at every start (the unit's comments say why each is worth
// little there) against CAP_SYS_RESOURCE and @resources, which virtiofsd does
// not need. A change that raises it must say why, here and in the unit's
// comments; the goal is 3.5 at most, on systemd 252 and 257 alike.
const maxExposure = 3.5

// TestUnitsPassSystemdAnalyzeVerify verifies instances of both templates as
// installed in the box, the binary present.
func TestUnitsPassSystemdAnalyzeVerify(t *testing.T) {
	shimbox.Legs(t, testUnitsPassSystemdAnalyzeVerify)
}

func testUnitsPassSystemdAnalyzeVerify(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	// verify takes unit files: instances of the templates, in a folder of
	// their own, with the installed units on the search path.
	const dir = "/run/verify"
	for _, kind := range []string{"socket", "service"} {
		unit, err := b.Run(t.Context(), "cat", leg.UnitDir()+"/virtiofsd@."+kind)
		require.NoError(t, err)
		require.NoError(t, b.WriteFile(dir+"/virtiofsd@x."+kind, []byte(unit), 0o644))
	}
	out, err := b.Run(context.Background(), "systemd-analyze", "verify", "--man=no",
		dir+"/virtiofsd@x.socket", dir+"/virtiofsd@x.service")
	assert.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(out), "systemd-analyze verify")
}

func TestServiceExposureStaysLow(t *testing.T) { shimbox.Legs(t, testServiceExposureStaysLow) }

func testServiceExposureStaysLow(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	_, err := b.AddInstance("x")
	require.NoError(t, err)
	out, err := b.Run(t.Context(), "systemd-analyze", "security", "--no-pager", "virtiofsd@x.service")
	require.NoError(t, err, out)
	m := regexp.MustCompile(`Overall exposure level for virtiofsd@x\.service: ([0-9.]+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	level, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	assert.LessOrEqual(t, level, maxExposure, out)
}
