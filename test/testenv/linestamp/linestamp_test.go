package linestamp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestEachCompleteLineIsHandedOverWithTheTimeItsEndArrived(t *testing.T) {
	var lines []string
	var ats []time.Time
	w := New(func(line string, at time.Time) { lines, ats = append(lines, line), append(ats, at) })

	_, _ = w.Write([]byte("ANSW"))
	assert.Empty(t, lines, "a partial line waits")
	before := time.Now()
	_, _ = w.Write([]byte("ERED 1\r\nboot\nrest"))
	assert.Equal(t, []string{"ANSWERED 1", "boot"}, lines)
	assert.False(t, ats[0].Before(before), "the time is that of the write that ended the line")
	_, _ = w.Write([]byte("\n"))
	assert.Equal(t, []string{"ANSWERED 1", "boot", "rest"}, lines)
}
