package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// QMP is a client of QEMU's QMP monitor (docs/interop/qmp-spec in QEMU):
// JSON objects over a unix socket, one command at a time. Events that
// arrive while waiting for an answer are kept (Events). Its methods are
// safe for concurrent use.
type QMP struct {
	path string

	mu     sync.Mutex
	conn   net.Conn
	dec    *json.Decoder
	events []QMPEvent
}

// QMPEvent is an asynchronous message of QEMU: {"event": ..., "data": ...,
// "timestamp": {"seconds": ..., "microseconds": ...}}.
type QMPEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	// At is when QEMU emitted it, by the host's wall clock (QEMU's
	// g_get_real_time): two QEMUs of one host can be compared.
	At time.Time `json:"-"`
}

// qmpTimestamp is an event's "timestamp".
type qmpTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// LastEvent is the last event named name received so far, and whether
// there is one.
func (q *QMP) LastEvent(name string) (QMPEvent, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := len(q.events) - 1; i >= 0; i-- {
		if q.events[i].Event == name {
			return q.events[i], true
		}
	}
	return QMPEvent{}, false
}

// QMPError is QEMU's answer {"error": {"class": ..., "desc": ...}}.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// qmpMessage is any message of QEMU's: an answer, an error, an event or the
// greeting.
type qmpMessage struct {
	Return    json.RawMessage `json:"return"`
	Error     *QMPError       `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp qmpTimestamp    `json:"timestamp"`
	Greeting  json.RawMessage `json:"QMP"`
}

// DialQMP connects to a QMP socket, reads QEMU's greeting and leaves
// capabilities negotiation mode (qmp_capabilities), within 30 s.
func DialQMP(path string) (*QMP, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to QMP %s: %w", path, err)
	}
	q := &QMP{path: path, conn: conn, dec: json.NewDecoder(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q.mu.Lock()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var greeting qmpMessage
	err = q.dec.Decode(&greeting)
	q.mu.Unlock()
	if err == nil && greeting.Greeting == nil {
		err = errors.New("no greeting")
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: read QEMU's greeting: %w", path, err)
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// Execute runs a command with arguments (nil for none) and decodes its
// answer into result (nil to ignore it). QEMU's error answer is a
// *QMPError. ctx bounds the exchange; without a deadline, 2 minutes do.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(2 * time.Minute)
	}
	_ = q.conn.SetDeadline(deadline)
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(b); err != nil {
		return fmt.Errorf("qmp %s: send: %w", command, err)
	}
	for {
		var msg qmpMessage
		if err := q.dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) && command == "quit" {
				return nil // QEMU may close before its answer arrives
			}
			return fmt.Errorf("qmp %s: read the answer: %w", command, err)
		}
		switch {
		case msg.Event != "":
			q.events = append(q.events, QMPEvent{Event: msg.Event, Data: msg.Data,
				At: time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000)})
		case msg.Error != nil:
			msg.Error.Command = command
			return msg.Error
		case msg.Return != nil:
			if result == nil {
				return nil
			}
			if err := json.Unmarshal(msg.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode the answer %s: %w", command, msg.Return, err)
			}
			return nil
		}
	}
}

// Events are the events received so far, oldest first.
func (q *QMP) Events() []QMPEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]QMPEvent(nil), q.events...)
}

// Status is QMP query-status's "status": "running", "paused",
// "postmigrate", "inmigrate", ...
func (q *QMP) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := q.Execute(ctx, "query-status", nil, &st)
	return st.Status, err
}

// Close closes the connection; QEMU goes on running.
func (q *QMP) Close() error { return q.conn.Close() }
