package main

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestListWithoutSystemdExitsUnavailableAndSaysWhatWasTried(t *testing.T) {
	for _, p := range []string{"/run/systemd/private", "/run/dbus/system_bus_socket"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: this host runs systemd or D-Bus", p)
		}
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"list"}, &stdout, &stderr)
	assert.Equal(t, 69, code)
	assert.Empty(t, stdout.String())
	if os.Geteuid() == 0 {
		assert.Contains(t, stderr.String(), "/run/systemd/private: dial unix /run/systemd/private")
	}
	assert.Contains(t, stderr.String(), "system bus unix:path=/run/dbus/system_bus_socket")
	assert.Contains(t, stderr.String(), "run it on a host booted with systemd")
}

func TestListRefusesBadFlagsAndNamesBeforeAskingSystemd(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":       {"list", "--bogus"},
		"name with a slash":  {"list", "vm1", "../vm2"},
		"empty name":         {"list", ""},
		"name with a space":  {"list", "vm 1"},
		"flag value missing": {"list", "--config-dir"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, 64, Main(context.Background(), args, &stdout, &stderr), stderr.String())
			assert.Empty(t, stdout.String())
		})
	}
}

func TestListHelpShowsExamples(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, Main(context.Background(), []string{"list", "--help"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "virtiofsd-shim list --json")
	assert.Contains(t, stderr.String(), "-config-dir")
}

// The maintainer scripts run upgrade-plan: a wrong --for is a usage
// error before systemd is asked, and without systemd it exits 69 and
// prints no unit to restart.
func TestUpgradePlanRefusesAnUnknownUpgradeAndPrintsNoUnitWithoutSystemd(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 64, Main(context.Background(), []string{"upgrade-plan", "--for=shim"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), `unknown upgrade "shim": use package or virtiofsd`)
	assert.Empty(t, stdout.String())
	for _, p := range []string{"/run/systemd/private", "/run/dbus/system_bus_socket"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: this host runs systemd or D-Bus", p)
		}
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	stdout.Reset()
	assert.Equal(t, 69, Main(context.Background(), []string{"upgrade-plan", "--for=virtiofsd"}, &stdout, &stderr))
	assert.Empty(t, stdout.String(), "no unit to act on")
}
