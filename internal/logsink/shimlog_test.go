package logsink

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTheShimsOwnEntriesAreTextWithoutATimestampOffATerminal(t *testing.T) {
	var b bytes.Buffer
	l := NewShimLog(&b)
	l.WithField("instance", "vm1").Info("virtiofsd is ready")
	assert.Equal(t, "level=info msg=\"virtiofsd is ready\" instance=vm1\n", b.String())
	assert.False(t, l.Journaled())
}

// A terminal is a character device, as /dev/null is: the test's stand-in.
func TestTheShimsOwnEntriesCarryATimestampAtATerminal(t *testing.T) {
	dev, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer dev.Close()
	f, ok := NewShimLog(dev).Formatter.(*logrus.TextFormatter)
	require.True(t, ok)
	assert.False(t, f.DisableTimestamp)
}

func TestOnTheJournalTheShimsEntriesLeaveStderr(t *testing.T) {
	var b bytes.Buffer
	l := NewShimLog(&b)
	l.ToJournal(Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service"})
	l.ToJournal(Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service", Session: "s1"})
	assert.True(t, l.Journaled())
	assert.Equal(t, io.Discard, l.Out)
	hooks := l.Hooks[logrus.InfoLevel]
	require.Len(t, hooks, 1, "a new origin replaces the old one")
	assert.Equal(t, Hook{Origin: Origin{Instance: "vm1", Unit: "virtiofsd@vm1.service", Session: "s1"}}, hooks[0])
}
