package logsink

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConsoleLogCopiesEachLineToTheKernelLogWithoutJournald(t *testing.T) {
	var stderr, kmsg bytes.Buffer
	l := &ConsoleLog{Stderr: &stderr, Identifier: "gen", Kmsg: &kmsg, PID: 42}
	_, err := l.Write([]byte("gen: skipping virtiofsd@vm1: bad\nsecond line\n"))
	require.NoError(t, err)
	assert.Equal(t, "gen: skipping virtiofsd@vm1: bad\nsecond line\n", stderr.String(), "stderr keeps the text as written")
	assert.Equal(t, "<4>gen[42]: skipping virtiofsd@vm1: bad\n<4>gen[42]: second line\n", kmsg.String())
}

func TestConsoleLogSendsEachLineToTheJournalUnderItsIdentifier(t *testing.T) {
	var stderr, kmsg bytes.Buffer
	var got []string
	l := &ConsoleLog{Stderr: &stderr, Identifier: "gen", Kmsg: &kmsg, Journal: func(msg string, f map[string]string) error {
		got = append(got, f[FieldIdentifier]+"|"+msg)
		return nil
	}}
	_, err := l.Write([]byte("gen: no instance configured\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"gen|no instance configured"}, got)
	assert.Empty(t, kmsg.String(), "the journal, not the kernel log, when journald runs")
}
