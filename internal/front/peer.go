package front

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// read is one ReadMessage's outcome.
type read struct {
	m   *vhostuser.Message
	err error
}

// peer is one end the front talks to (the VM or a back end): its
// connection and a goroutine that reads it into msgs, one message at a
// time. The goroutine reads the next message only when the last one was
// taken, so a peer whose msgs nobody takes is not read: that is how the
// front holds the VM's requests during a swap.
type peer struct {
	raw  *net.UnixConn
	conn *vhostuser.Conn
	msgs chan read
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func newPeer(c *net.UnixConn) *peer {
	p := &peer{raw: c, conn: vhostuser.NewConn(c), msgs: make(chan read), stop: make(chan struct{}), done: make(chan struct{})}
	go p.read()
	return p
}

func (p *peer) read() {
	defer close(p.done)
	for {
		m, err := p.conn.ReadMessage()
		select {
		case p.msgs <- read{m, err}:
		case <-p.stop:
			if m != nil {
				m.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// close closes the connection and waits for the reader to end.
func (p *peer) close() {
	p.once.Do(func() {
		close(p.stop)
		p.conn.Close()
		<-p.done
	})
}

// dupConn returns a duplicate of the connection's descriptor, which
// stays open when the peer is closed.
func (p *peer) dupConn() (*os.File, error) { return dupOf(p.raw, "vhost-user connection") }

// hold stops the reader without closing the connection, and returns the
// messages it had read but nobody had taken (at most one). The reader is
// stopped by a read deadline: QEMU writes each message whole, so the
// deadline finds the reader between messages. An error says the
// connection ended or broke instead; the messages are returned either way,
// for the caller to close.
func (p *peer) hold() ([]*vhostuser.Message, error) {
	if err := p.raw.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil, fmt.Errorf("set a read deadline: %w", err)
	}
	var held []*vhostuser.Message
	for r := range p.msgs {
		if r.err != nil {
			<-p.done
			if errors.Is(r.err, os.ErrDeadlineExceeded) {
				return held, nil
			}
			return held, r.err
		}
		held = append(held, r.m)
	}
	return held, nil
}

// message builds a request of the front's own, with NEED_REPLY when asked.
func message(req vhostuser.Request, payload []byte, files []*os.File, needReply bool) *vhostuser.Message {
	flags := vhostuser.FlagVersion
	if needReply {
		flags |= vhostuser.FlagNeedReply
	}
	return &vhostuser.Message{
		Header:  vhostuser.Header{Request: req, Flags: flags, Size: uint32(len(payload))},
		Payload: payload,
		Files:   files,
	}
}

// send writes a request of the front's own that gets no reply.
func (p *peer) send(req vhostuser.Request, payload []byte, files []*os.File) error {
	if err := p.conn.WriteMessage(message(req, payload, files, false)); err != nil {
		return fmt.Errorf("send %s: %w", req, err)
	}
	return nil
}

// call writes a request of the front's own and waits for its reply. With
// ack, the request carries NEED_REPLY and the reply must be a zero u64
// (REPLY_ACK); otherwise the request is one that is always answered
// (GET_*, SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE) and the reply is
// returned for the caller to close.
func (p *peer) call(ctx context.Context, req vhostuser.Request, payload []byte, files []*os.File, ack bool) (*vhostuser.Message, error) {
	if err := p.conn.WriteMessage(message(req, payload, files, ack)); err != nil {
		return nil, fmt.Errorf("send %s: %w", req, err)
	}
	var r read
	select {
	case r = <-p.msgs:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the reply to %s: %w", req, ctx.Err())
	}
	if r.err != nil {
		return nil, fmt.Errorf("read the reply to %s: %w", req, r.err)
	}
	if r.m.Request != req || !r.m.IsReply() {
		r.m.Close()
		return nil, fmt.Errorf("the reply to %s came as %s (flags %#x)", req, r.m.Request, r.m.Flags)
	}
	if !ack {
		return r.m, nil
	}
	defer r.m.Close()
	if len(r.m.Payload) != 8 {
		return nil, fmt.Errorf("the ack of %s has %d bytes, want 8", req, len(r.m.Payload))
	}
	if v := binary.LittleEndian.Uint64(r.m.Payload); v != 0 {
		return nil, fmt.Errorf("%s failed in the back end (ack %d)", req, v)
	}
	return nil, nil
}

// ack sends a request with NEED_REPLY and checks its ack.
func (p *peer) ack(ctx context.Context, req vhostuser.Request, payload []byte, files ...*os.File) error {
	_, err := p.call(ctx, req, payload, files, true)
	return err
}

// u64 sends a request that is always answered with a u64 and returns it.
func (p *peer) u64(ctx context.Context, req vhostuser.Request, payload []byte, files ...*os.File) (uint64, error) {
	m, err := p.call(ctx, req, payload, files, false)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	v, err := vhostuser.ParseU64(m.Payload)
	if err != nil {
		return 0, fmt.Errorf("the reply to %s: %w", req, err)
	}
	return uint64(v), nil
}
