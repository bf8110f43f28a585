package service

import (
	"testing"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
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
