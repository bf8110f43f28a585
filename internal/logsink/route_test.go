package logsink

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unitOfScope is SelfUnitOf as a fake: a system or a user manager's unit.
func unitOfScope(user bool) string {
	if user {
		return "virtiofsd@vm1.service (user)"
	}
	return "virtiofsd@vm1.service"
}

func TestAutoSendsLinesToTheJournalOnlyUnderSystemd(t *testing.T) {
	for _, tc := range []struct {
		target       string
		underJournal bool
		journal      bool
	}{
		{"auto", true, true},
		{"auto", false, false},
		{"journal", false, true},
		{"stderr", true, false},
	} {
		r, err := NewRoute(tc.target, "vm1", false, func() bool { return tc.underJournal }, unitOfScope)
		require.NoError(t, err)
		assert.Equal(t, tc.journal, r.Journal, "--log-target=%s under journal %v", tc.target, tc.underJournal)
	}
}

func TestAnUnknownLogTargetIsRefusedWithTheChoices(t *testing.T) {
	_, err := NewRoute("syslog", "vm1", false, func() bool { return true }, unitOfScope)
	assert.EqualError(t, err, "syslog: want auto, journal or stderr")
}

func TestJournalEntriesNameTheUnitInTheFieldTheirScopesJournalctlMatches(t *testing.T) {
	sys, err := NewRoute("journal", "vm1", false, nil, unitOfScope)
	require.NoError(t, err)
	assert.Equal(t, Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service"}, sys.Origin)
	usr, err := NewRoute("journal", "vm1", true, nil, unitOfScope)
	require.NoError(t, err)
	assert.Equal(t, Origin{Instance: "vm1", UserUnit: "virtiofsd@vm1.service (user)"}, usr.Origin)
	text, err := NewRoute("stderr", "vm1", false, nil, unitOfScope)
	require.NoError(t, err)
	assert.Equal(t, Origin{Instance: "vm1"}, text.Origin, "text names no unit")
}

func TestLinesOnStderrAreTextWithNoRateLimit(t *testing.T) {
	r, err := NewRoute("stderr", "", false, nil, unitOfScope)
	require.NoError(t, err)
	var b bytes.Buffer
	sink, limits := r.Sink("vm1", &b)
	assert.Equal(t, TextSink{W: &b}, sink)
	assert.Equal(t, Limits{}, limits)
}

func TestJournalLinesNameTheInstanceTheSocketRevealedAndThenTheSession(t *testing.T) {
	r, err := NewRoute("journal", "", false, nil, unitOfScope) // run without --instance
	require.NoError(t, err)
	sink, _ := r.Sink("vm1", nil) // the name from the socket's path
	assert.Equal(t, JournalSink{Origin: Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service"}}, sink)
	assert.Equal(t, Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service", Session: "s1"}, r.Session("s1"))
	assert.Equal(t, "s2", r.Session("s2").Session, "each session renames the entries")
}
