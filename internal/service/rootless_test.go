package service

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/logsink"
)

type recordSink struct{ got []logsink.Record }

func (s *recordSink) Write(r logsink.Record, _ map[string]string) error {
	s.got = append(s.got, r)
	return nil
}

func TestRootlessSinkLowersOnlyTheExpectedWarnings(t *testing.T) {
	rec := &recordSink{}
	s := RootlessSink{rec}
	for _, r := range []logsink.Record{
		{Message: "Couldn't set the process uid as root: -1", Priority: journal.PriWarning},
		{Message: "Couldn't set the process gid as root: -1", Priority: journal.PriWarning},
		{Message: "Failure when trying to set the limit to 1000000, the hard limit (20000) of open file descriptors is used instead.", Priority: journal.PriWarning},
		{Message: "Some other warning", Priority: journal.PriWarning},
		{Message: "Couldn't set the process uid as root: -1", Priority: journal.PriErr},
	} {
		require.NoError(t, s.Write(r, nil))
	}
	var got []journal.Priority
	for _, r := range rec.got {
		got = append(got, r.Priority)
	}
	assert.Equal(t, []journal.Priority{journal.PriNotice, journal.PriNotice, journal.PriNotice, journal.PriWarning, journal.PriErr}, got)
}
