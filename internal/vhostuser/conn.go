package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/scm"
)

// Header starts every message: 12 bytes, little-endian on the wire.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32 // payload bytes that follow the header
}

func parseHeader(b []byte) Header {
	return Header{Request: Request(le.Uint32(b)), Flags: le.Uint32(b[4:]), Size: le.Uint32(b[8:])}
}

func (h Header) append(b []byte) []byte {
	b = le.AppendUint32(b, uint32(h.Request))
	b = le.AppendUint32(b, h.Flags)
	return le.AppendUint32(b, h.Size)
}

// Message is one request or reply with the descriptors that came with it.
// The Message owns its Files: Close closes them.
type Message struct {
	Header
	Payload []byte
	Files   []*os.File
}

// NeedsReply tells whether the sender asked for an ack (FlagNeedReply).
func (m *Message) NeedsReply() bool { return m.Flags&FlagNeedReply != 0 }

// IsReply tells whether the message answers a request (FlagReply).
func (m *Message) IsReply() bool { return m.Flags&FlagReply != 0 }

// Close closes every descriptor of the message and forgets them; it returns
// the first error.
func (m *Message) Close() error {
	err := closeAll(m.Files)
	m.Files = nil
	return err
}

// String describes the message for a log line, without its payload.
func (m *Message) String() string {
	kind := "request"
	if m.IsReply() {
		kind = "reply"
	}
	return fmt.Sprintf("%s %s (flags %#x, %d bytes, %d fds)", m.Request, kind, m.Flags, len(m.Payload), len(m.Files))
}

func closeAll(files []*os.File) error {
	var first error
	for _, f := range files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ProtocolError is a message that breaks a rule of the protocol or of the
// table. The connection it came from is out of step and must be closed;
// every descriptor that came with the message has been closed.
type ProtocolError struct {
	Request Request
	Rule    string // e.g. "carries 2 fds, at most 1 allowed"
}

func (e *ProtocolError) Error() string {
	return "vhost-user " + e.Request.String() + " " + e.Rule
}

// ReplyError is a back end's answer that reports a failure.
type ReplyError struct {
	Request Request
	Status  uint64 // the u64 the back end answered
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("vhost-user back end failed %s (status %#x): see the back end's log", e.Request, e.Status)
}

// unixConn is what Conn needs of a *net.UnixConn.
type unixConn interface {
	ReadMsgUnix(b, oob []byte) (n, oobn, flags int, addr *net.UnixAddr, err error)
	WriteMsgUnix(b, oob []byte, addr *net.UnixAddr) (n, oobn int, err error)
	Write(b []byte) (int, error)
	Close() error
}

// Conn is one end of a vhost-user stream socket. It refuses, with a
// *ProtocolError, a message larger than MaxPayload or with more than MaxFDs
// descriptors, one that breaks its request's rules in the table, and a
// reply that breaks its request's reply rules. A request the table does not
// know is returned as it came (Lookup says false), within the same limits.
// On any error of ReadMessage, every descriptor received with the bad
// message is closed.
//
// One goroutine may read (ReadMessage, Call) while others write
// (WriteMessage); writes are atomic with respect to each other.
type Conn struct {
	c        unixConn
	wmu      sync.Mutex
	features atomic.Uint64
}

// NewConn wraps an established vhost-user connection.
func NewConn(c *net.UnixConn) *Conn { return &Conn{c: c} }

// SetProtocolFeatures records the protocol features the front end set with
// SET_PROTOCOL_FEATURES, which decide whether an ack is due (Call,
// Spec.ReplyExpected).
func (c *Conn) SetProtocolFeatures(f uint64) { c.features.Store(f) }

// ProtocolFeatures returns what SetProtocolFeatures recorded.
func (c *Conn) ProtocolFeatures() uint64 { return c.features.Load() }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// oobSize holds the control message of MaxFDs descriptors; a message with
// more arrives truncated (MSG_CTRUNC) and is refused.
var oobSize = unix.CmsgSpace(MaxFDs * 4)

// ReadMessage reads the next message and checks it against the table. It
// returns io.EOF when the peer hung up between messages, and an error
// wrapping io.ErrUnexpectedEOF when it hung up within one.
func (c *Conn) ReadMessage() (*Message, error) {
	var files []*os.File
	m, err := c.readMessage(&files)
	if err != nil {
		closeAll(files)
		return nil, err
	}
	return m, nil
}

func (c *Conn) readMessage(files *[]*os.File) (*Message, error) {
	var hb [HeaderSize]byte
	if err := c.readFull(hb[:], files, 0); err != nil {
		return nil, err
	}
	h := parseHeader(hb[:])
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	payload := make([]byte, h.Size)
	if err := c.readFull(payload, files, h.Request); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %s payload: %w", h.Request, err)
	}
	m := &Message{Header: h, Payload: payload, Files: *files}
	if err := checkMessage(m); err != nil {
		return nil, err
	}
	return m, nil
}

// readFull fills b, collecting the descriptors that arrive on the way. It
// returns io.EOF if the peer hung up before the first byte, and
// io.ErrUnexpectedEOF if after it. req names the message in errors; 0 means
// b is the header, which names it once its first four bytes are in.
func (c *Conn) readFull(b []byte, files *[]*os.File, req Request) error {
	oob := make([]byte, oobSize)
	for got := 0; got < len(b); {
		n, oobn, flags, _, err := c.c.ReadMsgUnix(b[got:], oob)
		got += n
		if perr := parseRights(oob[:oobn], files); perr != nil {
			return perr
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return &ProtocolError{Request: requestOf(req, b, got), Rule: fmt.Sprintf("carries more than %d fds (control data truncated)", MaxFDs)}
		}
		if len(*files) > MaxFDs {
			return &ProtocolError{Request: requestOf(req, b, got), Rule: fmt.Sprintf("carries %d fds, at most %d allowed", len(*files), MaxFDs)}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return eof(got)
			}
			return fmt.Errorf("read vhost-user message: %w", err)
		}
		if n == 0 {
			return eof(got)
		}
	}
	return nil
}

func eof(got int) error {
	if got == 0 {
		return io.EOF
	}
	return io.ErrUnexpectedEOF
}

// requestOf is req, or while the header b is read (req 0), its request
// once its first four bytes have arrived.
func requestOf(req Request, b []byte, got int) Request {
	if req == 0 && got >= 4 {
		return Request(le.Uint32(b))
	}
	return req
}

// parseRights adds the descriptors of SCM_RIGHTS control messages to files.
func parseRights(oob []byte, files *[]*os.File) error {
	got, err := scm.Files(oob, "vhost-user fd")
	*files = append(*files, got...)
	if err != nil {
		return fmt.Errorf("read vhost-user message: %w", err)
	}
	return nil
}

// checkHeader applies the rules that hold before the payload is read.
func checkHeader(h Header) error {
	if v := h.Flags & versionMask; v != FlagVersion {
		return &ProtocolError{Request: h.Request, Rule: fmt.Sprintf("has version %d, want 1", v)}
	}
	if u := h.Flags &^ knownFlags; u != 0 {
		return &ProtocolError{Request: h.Request, Rule: fmt.Sprintf("sets unknown flags %#x", u)}
	}
	if h.Flags&FlagReply != 0 && h.Flags&FlagNeedReply != 0 {
		return &ProtocolError{Request: h.Request, Rule: "is a reply that asks for a reply"}
	}
	if h.Size > MaxPayload {
		return &ProtocolError{Request: h.Request, Rule: fmt.Sprintf("announces a %d-byte payload, at most %d allowed", h.Size, MaxPayload)}
	}
	return nil
}

// checkMessage applies the table's rules to a whole message.
func checkMessage(m *Message) error {
	spec, ok := Lookup(m.Request)
	if !ok {
		return nil
	}
	var perr *ProtocolError
	if m.IsReply() {
		perr = spec.checkReply(m.Payload, len(m.Files))
	} else {
		perr = spec.checkRequest(m.Payload, len(m.Files))
	}
	if perr != nil {
		return perr
	}
	return nil
}

// WriteMessage sends m with its Files by SCM_RIGHTS; it does not close
// them. The header's Size is written as len(m.Payload). It refuses a
// payload above MaxPayload or more than MaxFDs files, but does not apply
// the table: a relay passes on what it was given.
func (c *Conn) WriteMessage(m *Message) error {
	if len(m.Payload) > MaxPayload {
		return &ProtocolError{Request: m.Request, Rule: fmt.Sprintf("has a %d-byte payload to send, at most %d allowed", len(m.Payload), MaxPayload)}
	}
	if len(m.Files) > MaxFDs {
		return &ProtocolError{Request: m.Request, Rule: fmt.Sprintf("has %d fds to send, at most %d allowed", len(m.Files), MaxFDs)}
	}
	h := m.Header
	h.Size = uint32(len(m.Payload))
	b := append(h.append(make([]byte, 0, HeaderSize+len(m.Payload))), m.Payload...)
	oob, err := scm.Rights(m.Files)
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Request, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, _, err := c.c.WriteMsgUnix(b, oob, nil)
	runtime.KeepAlive(m.Files)
	for err == nil && n < len(b) {
		var k int
		k, err = c.c.Write(b[n:])
		n += k
	}
	if err != nil {
		return fmt.Errorf("send %s: %w", m.Request, err)
	}
	return nil
}

// Call sends a request and, if the back end answers it (Spec.ReplyExpected
// with the protocol features of SetProtocolFeatures), reads and returns the
// answer; otherwise it returns nil. needReply sets FlagNeedReply. An ack,
// or CHECK_DEVICE_STATE's or SET_DEVICE_STATE_FD's status, that reports a
// failure is a *ReplyError. Call must not run while another goroutine
// reads the connection. The caller closes the reply.
func (c *Conn) Call(req Request, payload []byte, files []*os.File, needReply bool) (*Message, error) {
	flags := FlagVersion
	if needReply {
		flags |= FlagNeedReply
	}
	m := &Message{Header: Header{Request: req, Flags: flags}, Payload: payload, Files: files}
	if err := c.WriteMessage(m); err != nil {
		return nil, err
	}
	features := c.ProtocolFeatures()
	spec, known := Lookup(req)
	if !known {
		spec = Spec{Request: req, Reply: ReplyAck, status: statusNone}
	}
	if !spec.ReplyExpected(m.Header, features) {
		return nil, nil
	}
	r, err := c.ReadMessage()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read reply to %s: %w", req, err)
	}
	if !r.IsReply() || r.Request != req {
		r.Close()
		return nil, &ProtocolError{Request: req, Rule: fmt.Sprintf("was answered by %s", r)}
	}
	st := spec.status
	if spec.Reply == ReplyIfLogShmfd && features&ProtoLogShmfd == 0 {
		st = statusU64
	}
	if err := replyStatus(req, st, r.Payload); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func replyStatus(req Request, st status, p []byte) error {
	if st == statusNone {
		return nil
	}
	v, err := ParseU64(p)
	if err != nil {
		return &ProtocolError{Request: req, Rule: "reply " + err.(*PayloadError).Rule}
	}
	if st == statusLowByte {
		v &= 0xff
	}
	if v != 0 {
		return &ReplyError{Request: req, Status: uint64(v)}
	}
	return nil
}
