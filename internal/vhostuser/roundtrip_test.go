package vhostuser

import (
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/memfd"
)

func TestRealDescriptorsCrossTheSocketAndStillWork(t *testing.T) {
	a, z := socketPair(t)
	front, back := NewConn(a), NewConn(z)

	ev := eventfd(t)
	mem := memfd.New(t, "memfd", "guest memory")
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { pr.Close(); pw.Close() })

	table := MemTable{Regions: []MemRegion{{GuestAddr: 0, Size: 12, UserAddr: 0x7f0000000000}}}
	require.NoError(t, front.WriteMessage(&Message{Header: Header{Request: SetMemTable, Flags: FlagVersion, Size: 999}, Payload: table.Bytes(), Files: []*os.File{mem}}))
	require.NoError(t, front.WriteMessage(&Message{Header: Header{Request: SetVringKick, Flags: FlagVersion | FlagNeedReply}, Payload: VringFD{Index: 1}.Bytes(), Files: []*os.File{ev}}))
	require.NoError(t, front.WriteMessage(&Message{Header: Header{Request: SetDeviceStateFD, Flags: FlagVersion}, Payload: DeviceStateFD{Direction: DirectionSave}.Bytes(), Files: []*os.File{pw}}))
	_, err = ev.Write(u64Bytes(5)) // still ours: WriteMessage does not close
	require.NoError(t, err)

	m, err := back.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, uint32(len(table.Bytes())), m.Size, "the header's size is the payload's")
	got, err := ParseMemTable(m.Payload)
	require.NoError(t, err)
	assert.Equal(t, table, got)
	require.Len(t, m.Files, 1)
	buf := make([]byte, 12)
	_, err = m.Files[0].ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, "guest memory", string(buf))
	require.NoError(t, m.Close())

	m, err = back.ReadMessage()
	require.NoError(t, err)
	assert.True(t, m.NeedsReply())
	require.Len(t, m.Files, 1)
	n := make([]byte, 8)
	_, err = m.Files[0].Read(n)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), le.Uint64(n), "the received eventfd is the sent one")
	m.Close()

	m, err = back.ReadMessage()
	require.NoError(t, err)
	require.Len(t, m.Files, 1)
	_, err = m.Files[0].WriteString("state")
	require.NoError(t, err)
	m.Close()
	pw.Close()
	state, err := io.ReadAll(pr)
	require.NoError(t, err)
	assert.Equal(t, "state", string(state))
}

func TestWriteMessageRefusesWhatNoPeerMayRead(t *testing.T) {
	a, _ := socketPair(t)
	c := NewConn(a)
	ev := eventfd(t)
	files := make([]*os.File, MaxFDs+1)
	for i := range files {
		files[i] = ev
	}
	requireRefused(t, c.WriteMessage(&Message{Header: Header{Request: SetConfig}, Payload: make([]byte, MaxPayload+1)}), SetConfig, "has a 4097-byte payload to send, at most 4096 allowed")
	requireRefused(t, c.WriteMessage(&Message{Header: Header{Request: SetMemTable}, Files: files}), SetMemTable, "has 9 fds to send, at most 8 allowed")
	assert.ErrorContains(t, c.WriteMessage(&Message{Header: Header{Request: SetLogFD}, Files: []*os.File{nil}}), "send SET_LOG_FD: nil file")
	closed := eventfd(t)
	closed.Close()
	assert.ErrorContains(t, c.WriteMessage(&Message{Header: Header{Request: SetLogFD}, Files: []*os.File{closed}}), "send SET_LOG_FD: descriptor of eventfd")
}

func TestWriteMessageAtTheLimitsIsRead(t *testing.T) {
	a, z := socketPair(t)
	ev := eventfd(t)
	files := make([]*os.File, MaxFDs)
	for i := range files {
		files[i] = ev
	}
	p := make([]byte, MaxPayload)
	p[MaxPayload-1] = 1
	require.NoError(t, NewConn(a).WriteMessage(&Message{Header: Header{Request: 100, Flags: FlagVersion}, Payload: p, Files: files}))
	m, err := NewConn(z).ReadMessage()
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, p, m.Payload)
	assert.Len(t, m.Files, MaxFDs)
}

func TestWriteToAClosedPeerFails(t *testing.T) {
	a, z := socketPair(t)
	z.Close()
	c := NewConn(a)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = c.WriteMessage(&Message{Header: Header{Request: GetFeatures, Flags: FlagVersion}})
	}
	assert.ErrorContains(t, err, "send GET_FEATURES")
	assert.NoError(t, c.Close())
}

// backEnd answers each request read on c with the reply produced by answer.
func backEnd(t *testing.T, c *Conn, answer func(m *Message) *Message) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		for {
			m, err := c.ReadMessage()
			if err != nil {
				return
			}
			r := answer(m)
			m.Close()
			if m.Request == ResetDevice {
				c.Close() // hang up instead of answering
				return
			}
			if r != nil {
				if c.WriteMessage(r) != nil {
					return
				}
			}
		}
	}()
}

func reply(req Request, payload []byte, files ...*os.File) *Message {
	return &Message{Header: Header{Request: req, Flags: FlagVersion | FlagReply}, Payload: payload, Files: files}
}

func TestCallReturnsTheBackEndsAnswer(t *testing.T) {
	a, z := socketPair(t)
	front := NewConn(a)
	ev := eventfd(t)
	var seen []string
	backEnd(t, NewConn(z), func(m *Message) *Message {
		seen = append(seen, m.String())
		switch m.Request {
		case GetFeatures:
			return reply(GetFeatures, U64(FeatureProtocolFeatures|FeatureVersion1).Bytes())
		case SetVringEnable:
			if !m.NeedsReply() {
				return nil
			}
			return reply(SetVringEnable, U64(0).Bytes())
		case SetVringNum:
			return reply(SetVringNum, U64(22).Bytes())
		case SetLogBase:
			return reply(SetLogBase, nil)
		case SetDeviceStateFD:
			return reply(SetDeviceStateFD, DeviceStateReply{NoFD: true}.Bytes())
		case CheckDeviceState:
			return reply(CheckDeviceState, U64(1).Bytes())
		case GetVringBase:
			return reply(GetQueueNum, U64(1).Bytes())
		case GetQueueNum:
			return &Message{Header: Header{Request: GetQueueNum, Flags: FlagVersion}}
		case GetStatus:
			return reply(GetStatus, nil)
		}
		return nil
	})

	r, err := front.Call(GetFeatures, nil, nil, false)
	require.NoError(t, err)
	f, err := ParseU64(r.Payload)
	require.NoError(t, err)
	assert.Equal(t, U64(FeatureProtocolFeatures|FeatureVersion1), f)

	r, err = front.Call(SetVringEnable, VringState{Index: 0, Num: 1}.Bytes(), nil, false)
	require.NoError(t, err)
	assert.Nil(t, r, "no ack unless asked for")

	front.SetProtocolFeatures(ProtoReplyAck | ProtoLogShmfd)
	assert.Equal(t, ProtoReplyAck|ProtoLogShmfd, front.ProtocolFeatures())
	r, err = front.Call(SetVringEnable, VringState{Index: 0, Num: 1}.Bytes(), nil, true)
	require.NoError(t, err)
	require.NotNil(t, r)
	assert.True(t, r.IsReply())

	_, err = front.Call(SetVringNum, VringState{Index: 0, Num: 1024}.Bytes(), nil, true)
	var rerr *ReplyError
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, &ReplyError{Request: SetVringNum, Status: 22}, rerr)
	assert.Contains(t, err.Error(), "vhost-user back end failed SET_VRING_NUM (status 0x16)")

	r, err = front.Call(SetLogBase, Log{MmapSize: 4096}.Bytes(), []*os.File{ev}, false)
	require.NoError(t, err, "with LOG_SHMFD, SET_LOG_BASE is answered without a status")
	assert.Empty(t, r.Payload)

	r, err = front.Call(SetDeviceStateFD, DeviceStateFD{}.Bytes(), []*os.File{ev}, false)
	require.NoError(t, err)
	st, err := ParseDeviceStateReply(r.Payload)
	require.NoError(t, err)
	assert.Equal(t, DeviceStateReply{NoFD: true}, st)

	_, err = front.Call(CheckDeviceState, nil, nil, false)
	require.ErrorAs(t, err, &rerr)
	assert.Equal(t, CheckDeviceState, rerr.Request)

	_, err = front.Call(GetVringBase, VringState{}.Bytes(), nil, false)
	requireRefused(t, err, GetVringBase, "was answered by GET_QUEUE_NUM reply")

	_, err = front.Call(GetQueueNum, nil, nil, false)
	requireRefused(t, err, GetQueueNum, "was answered by GET_QUEUE_NUM request")

	_, err = front.Call(GetStatus, nil, nil, false)
	requireRefused(t, err, GetStatus, "reply has a 0-byte payload, want exactly 8")

	r, err = front.Call(99, []byte{1}, nil, false)
	require.NoError(t, err)
	assert.Nil(t, r, "an unknown request is not answered unless it asks for an ack")
}

func TestCallReportsFailedStatusesAndHangUps(t *testing.T) {
	a, z := socketPair(t)
	front := NewConn(a)
	front.SetProtocolFeatures(ProtoReplyAck)
	ev := eventfd(t)
	backEnd(t, NewConn(z), func(m *Message) *Message {
		switch m.Request {
		case SetDeviceStateFD:
			return reply(SetDeviceStateFD, U64(0x101).Bytes())
		case SetLogBase:
			return reply(SetLogBase, U64(3).Bytes())
		case 99:
			return reply(99, U64(7).Bytes())
		case SetOwner:
			return reply(SetOwner, U64(0).Bytes())
		}
		return nil
	})
	_, err := front.Call(SetDeviceStateFD, DeviceStateFD{Direction: DirectionLoad}.Bytes(), []*os.File{ev}, false)
	assert.Equal(t, &ReplyError{Request: SetDeviceStateFD, Status: 1}, err, "bits 0-7 are the error, bit 8 the no-fd flag")

	_, err = front.Call(SetLogBase, Log{MmapSize: 1}.Bytes(), []*os.File{ev}, true)
	assert.Equal(t, &ReplyError{Request: SetLogBase, Status: 3}, err, "without LOG_SHMFD, SET_LOG_BASE's answer is an ack")

	r, err := front.Call(99, nil, nil, true)
	require.NoError(t, err, "an unknown request's answer is passed on as it is")
	assert.Equal(t, U64(7).Bytes(), r.Payload)

	r, err = front.Call(SetOwner, nil, nil, true)
	require.NoError(t, err)
	assert.Equal(t, U64(0).Bytes(), r.Payload)

	_, err = front.Call(ResetDevice, nil, nil, true)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the back end hung up instead of answering")
	assert.ErrorContains(t, err, "read reply to RESET_DEVICE")
}

func TestCallDoesNotSendWhatWriteMessageRefuses(t *testing.T) {
	a, _ := socketPair(t)
	_, err := NewConn(a).Call(SetConfig, make([]byte, MaxPayload+1), nil, true)
	requireRefused(t, err, SetConfig, "4097-byte payload")
}

func TestReplyStatusOfAMalformedAck(t *testing.T) {
	err := replyStatus(SetOwner, statusU64, []byte{0})
	requireRefused(t, err, SetOwner, "reply is 1 bytes, want 8")
	assert.NoError(t, replyStatus(SetOwner, statusNone, nil))
	assert.NoError(t, replyStatus(SetDeviceStateFD, statusLowByte, U64(0x100).Bytes()))
	assert.Equal(t, &ReplyError{Request: SetOwner, Status: 0x100}, replyStatus(SetOwner, statusU64, U64(0x100).Bytes()))
}
