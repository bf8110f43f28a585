package main

import (
	"strings"
	"testing"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/journal"
)

func TestIDMapsUnderNoNewPrivsAreRefusedWithTheWayOut(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader("SHARED_DIR=/s\nGID_MAP=:0:100000:65536:\n"), "vm1.conf")
	require.NoError(t, err)
	assert.NoError(t, checkIDMapPrivileges(cfg, "Name:\tx\nNoNewPrivs:\t0\n"))
	err = checkIDMapPrivileges(cfg, "Name:\tx\nNoNewPrivs:\t1\n")
	assert.ErrorContains(t, err, "vm1.conf:2: GID_MAP= needs newuidmap/newgidmap")
	cfg.GIDMap = nil
	assert.NoError(t, checkIDMapPrivileges(cfg, "NoNewPrivs:\t1\n"), "no map, nothing to refuse")
}

type recordSink struct{ got []journal.Record }

func (s *recordSink) Write(r journal.Record, _ map[string]string) error {
	s.got = append(s.got, r)
	return nil
}

func TestRootlessSinkLowersOnlyTheExpectedWarnings(t *testing.T) {
	rec := &recordSink{}
	s := rootlessSink{rec}
	for _, r := range []journal.Record{
		{Message: "Couldn't set the process uid as root: -1", Priority: sdjournal.PriWarning},
		{Message: "Couldn't set the process gid as root: -1", Priority: sdjournal.PriWarning},
		{Message: "Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.", Priority: sdjournal.PriWarning},
		{Message: "Some other warning", Priority: sdjournal.PriWarning},
		{Message: "Couldn't set the process uid as root: -1", Priority: sdjournal.PriErr},
	} {
		require.NoError(t, s.Write(r, nil))
	}
	var got []sdjournal.Priority
	for _, r := range rec.got {
		got = append(got, r.Priority)
	}
	assert.Equal(t, []sdjournal.Priority{sdjournal.PriNotice, sdjournal.PriNotice, sdjournal.PriNotice, sdjournal.PriWarning, sdjournal.PriErr}, got)
}
