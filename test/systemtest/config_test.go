package systemtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// TestBadConfigFailsTheServiceWithStatus78 starts instances whose config is
// wrong: each start fails with EX_CONFIG (78) and the journal names the file,
// the line where there is one, and the problem.
func TestBadConfigFailsTheServiceWithStatus78(t *testing.T) {
	shimbox.Legs(t, testBadConfigFailsTheServiceWithStatus78)
}

func testBadConfigFailsTheServiceWithStatus78(t *testing.T, leg shimbox.Platform) {
	b := box(t, leg)
	share, err := b.Share("share")
	require.NoError(t, err)
	conf := func(name string) string { return filepath.Join(shimbox.ConfigDir, name+".conf") }
	cases := []struct {
		instance string
		setup    func() error
		want     []string // in one message of the unit's journal
	}{{
		instance: "missing",
		setup:    func() error { return nil },
		want:     []string{conf("missing"), "no such file"},
	}, {
		instance: "unknown",
		setup:    func() error { return b.Configure("unknown", "SHARED_DIR="+share+"\nCACHEMODE=never\n") },
		want:     []string{conf("unknown") + ":2:", "CACHEMODE"},
	}, {
		instance: "badvalue",
		setup:    func() error { return b.Configure("badvalue", "# comment\nSHARED_DIR="+share+"\nCACHE=sometimes\n") },
		want:     []string{conf("badvalue") + ":3:", "sometimes"},
	}, {
		instance: "writable",
		setup: func() error {
			if err := b.Configure("writable", "SHARED_DIR="+share+"\n"); err != nil {
				return err
			}
			return os.Chmod(b.Path(conf("writable")), 0o666)
		},
		want: []string{conf("writable"), "writable by group or others", "0666"},
	}}
	for _, tc := range cases {
		t.Run(tc.instance, func(t *testing.T) {
			require.NoError(t, tc.setup())
			unit := "virtiofsd@" + tc.instance + ".service"
			_, err := b.Run(t.Context(), "systemctl", "start", unit)
			require.Error(t, err, "the service started")
			p := show(t, b, unit, "ActiveState", "Result", "ExecMainStatus")
			assert.Equal(t, "failed", p["ActiveState"])
			assert.Equal(t, "exit-code", p["Result"])
			assert.Equal(t, "78", p["ExecMainStatus"])
			msgs := shimbox.Messages(journal(t, b, "-u", unit))
			found := false
			for _, m := range msgs {
				found = found || containsAll(m, tc.want)
			}
			assert.True(t, found, "no message of %s contains all of %q:\n%s", unit, tc.want, strings.Join(msgs, "\n"))
			assert.Empty(t, virtiofsdProcesses(t, b))
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
