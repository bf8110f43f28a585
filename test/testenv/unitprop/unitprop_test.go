package unitprop

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// manager answers systemctl show from a list of ActiveStates, one a call
// (the last one repeats), and records the arguments.
type manager struct {
	states []string
	calls  [][]string
	fail   error
}

func (m *manager) Systemctl(_ context.Context, args ...string) (string, error) {
	m.calls = append(m.calls, args)
	if m.fail != nil {
		return "Failed to connect to bus", m.fail
	}
	st := m.states[min(len(m.calls), len(m.states))-1]
	if strings.Contains(strings.Join(args, " "), "--value") {
		return st + "\n", nil
	}
	return "ActiveState=" + st + "\nSubState=dead\nStatusText=a=b\n", nil
}

func TestPropertyIsTheValueWithoutItsNewline(t *testing.T) {
	m := &manager{states: []string{"active"}}
	v, err := Property(context.Background(), m, "virtiofsd@vm1.service", "ActiveState")
	require.NoError(t, err)
	assert.Equal(t, "active", v)
	assert.Equal(t, []string{"show", "-p", "ActiveState", "--value", "virtiofsd@vm1.service"}, m.calls[0])
}

func TestShowReadsEveryPropertyAndKeepsEqualsSignsInValues(t *testing.T) {
	m := &manager{states: []string{"failed"}}
	p, err := Show(context.Background(), m, "virtiofsd@vm1.service", "ActiveState", "SubState", "StatusText")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"ActiveState": "failed", "SubState": "dead", "StatusText": "a=b"}, p)
	assert.Equal(t, []string{"show", "-p", "ActiveState,SubState,StatusText", "virtiofsd@vm1.service"}, m.calls[0])
}

func TestSystemctlFailureNamesTheUnitAndWhatItSaid(t *testing.T) {
	m := &manager{fail: errors.New("exit status 1")}
	_, err := Property(context.Background(), m, "virtiofsd@vm1.service", "ActiveState")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "virtiofsd@vm1.service")
	assert.Contains(t, err.Error(), "Failed to connect to bus")
	_, err = Show(context.Background(), m, "virtiofsd@vm1.service", "ActiveState")
	assert.ErrorContains(t, err, "Failed to connect to bus")
}

func TestWaitInactiveReturnsOnceTheUnitHasEnded(t *testing.T) {
	for _, end := range []string{"inactive", "failed"} {
		m := &manager{states: []string{"active", "deactivating", end}}
		st, err := WaitInactive(context.Background(), m, "virtiofsd@vm1.service", time.Minute)
		require.NoError(t, err)
		assert.Equal(t, end, st)
		assert.Len(t, m.calls, 3)
	}
}

func TestWaitInactiveSaysWhatTheUnitStillDoes(t *testing.T) {
	m := &manager{states: []string{"active"}}
	st, err := WaitInactive(context.Background(), m, "virtiofsd@vm1.service", 0)
	assert.Equal(t, "active", st)
	assert.EqualError(t, err, "virtiofsd@vm1.service still active after 0s")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = WaitInactive(ctx, m, "virtiofsd@vm1.service", time.Minute)
	assert.ErrorIs(t, err, context.Canceled)
}
