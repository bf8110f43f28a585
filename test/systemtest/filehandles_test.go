package systemtest

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// virtiofsdArgv is the command line of the instance's virtiofsd (the
// shim's one child), inside the box.
func virtiofsdArgv(t *testing.T, b *shimbox.Box, unit string) string {
	t.Helper()
	kids := children(t, b, show(t, b, unit, "MainPID")["MainPID"])
	require.Len(t, kids, 1, "the shim's one child, virtiofsd")
	return strings.ReplaceAll(run(t, b, "cat", "/proc/"+kids[0]+"/cmdline"), "\x00", " ")
}

// File handles need CAP_DAC_READ_SEARCH, which the shipped unit's bounding
// set lacks: without the generator's drop-in, the real Rust virtiofsd
// (1.13.2) given --inode-file-handles=prefer dies before its readiness line
// (docs/configuration.md, INODE_FILE_HANDLES). With INODE_FILE_HANDLES=prefer, or MIGRATION_MODE=file-handles,
// the generator grants it and the session is served, under the unit as
// shipped, with no hand-written drop-in. An instance without either key
// gets --inode-file-handles=never explicitly and no more capabilities.
func TestFileHandlesAreServedUnderTheShippedUnit(t *testing.T) {
	b := box(t, shimbox.Debian13)
	for _, tc := range []struct {
		instance, key string
		argv          []string
		granted       bool
	}{
		{"fhprefer", "INODE_FILE_HANDLES=prefer", []string{"--inode-file-handles=prefer"}, true},
		{"fhmig", "MIGRATION_MODE=file-handles", []string{"--inode-file-handles=never", "--migration-mode=file-handles", "--modcaps=+dac_read_search"}, true},
		{"fhdefault", "MIGRATION_ON_ERROR=guest-error", []string{"--inode-file-handles=never", "--migration-on-error=guest-error"}, false},
	} {
		t.Run(tc.instance, func(t *testing.T) {
			_, err := b.AddInstance(tc.instance, tc.key)
			require.NoError(t, err)
			systemctl(t, b, "daemon-reload") // the generator's drop-in
			enable(t, b, tc.instance)
			c := servedAndActive(t, b, tc.instance, dialTimeout)
			defer c.Close()

			unit := "virtiofsd@" + tc.instance + ".service"
			bounding := show(t, b, unit, "CapabilityBoundingSet")["CapabilityBoundingSet"]
			assert.Equal(t, tc.granted, strings.Contains(bounding, "cap_dac_read_search"), "bounding set %s", bounding)
			argv := virtiofsdArgv(t, b, unit)
			for _, a := range tc.argv {
				assert.Contains(t, argv, " "+a, "virtiofsd's argv")
			}
			waitJournal(t, b, "Client connected, servicing requests", "-u", unit)
			for _, m := range shimbox.Messages(journal(t, b, "-u", unit, "SYSLOG_IDENTIFIER=virtiofsd")) {
				assert.NotContains(t, m, "can't apply the child capabilities")
			}
		})
	}
}

// check refuses, offline, a key the installed virtiofsd (Debian 13's 1.13.2)
// cannot honour, with file:line, the version found and the version needed;
// and it warns of a --modcaps capability outside the unit's bounding set.
func TestCheckRefusesKeysTheInstalledVirtiofsdCannotHonour(t *testing.T) {
	b := box(t, shimbox.Debian13)
	ctx := context.Background()

	_, err := b.AddInstance("acl", "XATTR=yes", "POSIX_ACL=auto")
	require.NoError(t, err)
	out, err := b.Run(ctx, shimbox.BinaryPath, "check", "acl")
	require.Error(t, err)
	assert.Contains(t, out, "/etc/virtiofsd/acl.conf:3: POSIX_ACL=auto needs the Rust virtiofsd 1.14 or later")
	assert.Contains(t, out, "found Rust virtiofsd 1.13.2")
	assert.Contains(t, err.Error(), "exit status 78")
	// run refuses it the same way: the service fails with status 78 and
	// says why, at the line, in the journal.
	systemctl(t, b, "daemon-reload")
	_, err = b.Systemctl(ctx, "start", "virtiofsd@acl.service")
	require.Error(t, err, "the service cannot start")
	p := show(t, b, "virtiofsd@acl.service", "Result", "ExecMainStatus")
	assert.Equal(t, "exit-code", p["Result"])
	assert.Equal(t, "78", p["ExecMainStatus"])
	waitJournal(t, b, "/etc/virtiofsd/acl.conf:3: POSIX_ACL=auto needs the Rust virtiofsd 1.14 or later", "-u", "virtiofsd@acl.service")
	systemctl(t, b, "stop", "virtiofsd@acl.socket")

	_, err = b.AddInstance("both", "MIGRATION_MODE=file-handles", "MIGRATION_VERIFY_HANDLES=yes")
	require.NoError(t, err)
	out, err = b.Run(ctx, shimbox.BinaryPath, "check", "both")
	require.Error(t, err)
	assert.Contains(t, out, "/etc/virtiofsd/both.conf:3: MIGRATION_VERIFY_HANDLES=yes is for MIGRATION_MODE=find-paths")

	_, err = b.AddInstance("nice", "EXTRA_ARGS=--modcaps=+sys_nice")
	require.NoError(t, err)
	out = run(t, b, shimbox.BinaryPath, "check", "nice")
	assert.Contains(t, out, "capabilities  migrate-precopy, separate-options")
	assert.Contains(t, out, "warning: EXTRA_ARGS asks virtiofsd to keep CAP_SYS_NICE (--modcaps), which virtiofsd@nice.service's bounding set lacks (/etc/virtiofsd/nice.conf:2)")
}
