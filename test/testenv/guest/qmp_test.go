package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeQEMU pretends to be QEMU's QMP monitor: it greets, then answers each
// command with the scripted lines (events first, then the answer), and
// records the commands it read.
func fakeQEMU(t *testing.T, answers map[string][]string) (path string, got chan map[string]any) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	got = make(chan map[string]any, 16)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte(`{"QMP": {"version": {"qemu": {"major": 10}}, "capabilities": []}}` + "\r\n"))
		dec := json.NewDecoder(bufio.NewReader(c))
		for {
			var req map[string]any
			if dec.Decode(&req) != nil {
				return
			}
			got <- req
			for _, line := range answers[req["execute"].(string)] {
				_, _ = c.Write([]byte(line + "\r\n"))
			}
		}
	}()
	return path, got
}

func TestQMPNegotiatesRunsCommandsAndKeepsEvents(t *testing.T) {
	path, got := fakeQEMU(t, map[string][]string{
		"qmp_capabilities": {`{"return": {}}`},
		"query-status":     {`{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}`, `{"return": {"status": "running", "running": true}}`},
		"migrate":          {`{"error": {"class": "GenericError", "desc": "no such socket"}}`},
	})
	q, err := DialQMP(path)
	require.NoError(t, err)
	defer q.Close()
	assert.Equal(t, "qmp_capabilities", (<-got)["execute"], "the first command leaves negotiation mode")

	st, err := q.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "running", st)
	assert.Equal(t, map[string]any{"execute": "query-status"}, <-got, "no arguments sent when there are none")
	require.Len(t, q.Events(), 1)
	assert.Equal(t, "RESUME", q.Events()[0].Event)
	ev, ok := q.LastEvent("RESUME")
	require.True(t, ok)
	assert.Equal(t, time.Unix(1, 2000), ev.At, "QEMU's timestamp")
	_, ok = q.LastEvent("STOP")
	assert.False(t, ok)

	err = q.Execute(context.Background(), "migrate", map[string]any{"uri": "unix:/x"}, nil)
	var qe *QMPError
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "GenericError", qe.Class)
	assert.Contains(t, err.Error(), "qmp migrate: GenericError: no such socket")
	assert.Equal(t, map[string]any{"execute": "migrate", "arguments": map[string]any{"uri": "unix:/x"}}, <-got)
}
