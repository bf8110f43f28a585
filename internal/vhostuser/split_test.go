package vhostuser

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestAMessageReadInPiecesGathersTheFDsOfEveryPiece(t *testing.T) {
	ev := eventfd(t)
	whole := raw(SetMemTable, FlagVersion, 72, MemTable{Regions: []MemRegion{{Size: 1}, {Size: 2}}}.Bytes())
	before := openFDs(t)
	s := &scripted{reads: []chunk{
		{data: whole[:4], oob: dupRights(t, ev, 1)},
		{data: whole[4:HeaderSize]},
		{data: whole[HeaderSize : HeaderSize+10], oob: dupRights(t, ev, 1)},
		{data: whole[HeaderSize+10:]},
	}}
	m, err := (&Conn{c: s}).ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, whole[HeaderSize:], m.Payload)
	assert.Len(t, m.Files, 2)
	require.NoError(t, m.Close())
	assert.Equal(t, before, openFDs(t))
}

func TestPiecesThatTogetherCarryTooManyFDsAreRefused(t *testing.T) {
	ev := eventfd(t)
	whole := raw(SetMemTable, FlagVersion, 40, MemTable{Regions: []MemRegion{{Size: 1}}}.Bytes())
	for _, tc := range []struct {
		name   string
		chunks func() []chunk
		req    Request
		rule   string
	}{
		{"8 with the header and 1 with the payload", func() []chunk {
			return []chunk{{data: whole[:HeaderSize], oob: dupRights(t, ev, 8)}, {data: whole[HeaderSize:], oob: dupRights(t, ev, 1)}}
		}, SetMemTable, "carries 9 fds, at most 8 allowed"},
		{"5 and 4 within the header", func() []chunk {
			return []chunk{{data: whole[:4], oob: dupRights(t, ev, 5)}, {data: whole[4:HeaderSize], oob: dupRights(t, ev, 4)}}
		}, SetMemTable, "carries 9 fds"},
		{"truncated with the payload", func() []chunk {
			return []chunk{{data: whole[:HeaderSize]}, {data: whole[HeaderSize:], oob: dupRights(t, ev, 2), flags: 0x8}}
		}, SetMemTable, "carries more than 8 fds (control data truncated)"},
		{"truncated with the first 4 bytes", func() []chunk {
			return []chunk{{data: whole[:4], oob: dupRights(t, ev, 2), flags: 0x8}}
		}, SetMemTable, "control data truncated"},
		{"truncated before the request code is in", func() []chunk {
			return []chunk{{data: whole[:3], oob: dupRights(t, ev, 2), flags: 0x8}}
		}, 0, "control data truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			m, err := (&Conn{c: &scripted{reads: tc.chunks()}}).ReadMessage()
			assert.Nil(t, m)
			requireRefused(t, err, tc.req, tc.rule)
			assert.Equal(t, before, openFDs(t), "every fd that arrived is closed")
		})
	}
}

func TestReadErrorsAreReturnedAndTheirFDsClosed(t *testing.T) {
	ev := eventfd(t)
	boom := errors.New("boom")
	whole := raw(SetFeatures, FlagVersion, 8, U64(1).Bytes())
	for _, tc := range []struct {
		name   string
		chunks func() []chunk
		is     error
		text   string
	}{
		{"EOF before anything", func() []chunk { return []chunk{{err: io.EOF}} }, io.EOF, "EOF"},
		{"EOF with the first bytes", func() []chunk { return []chunk{{data: whole[:5], oob: dupRights(t, ev, 1), err: io.EOF}} }, io.ErrUnexpectedEOF, "unexpected EOF"},
		{"EOF within the payload", func() []chunk {
			return []chunk{{data: whole[:HeaderSize]}, {data: whole[HeaderSize : HeaderSize+1], oob: dupRights(t, ev, 1), err: io.EOF}}
		}, io.ErrUnexpectedEOF, "read SET_FEATURES payload: unexpected EOF"},
		{"a socket error", func() []chunk { return []chunk{{data: whole[:2], oob: dupRights(t, ev, 1), err: boom}} }, boom, "read vhost-user message: boom"},
		{"control data that does not parse", func() []chunk {
			return []chunk{{data: whole[:2], oob: []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}}}
		}, nil, "read vhost-user message: parse control data: invalid argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			m, err := (&Conn{c: &scripted{reads: tc.chunks()}}).ReadMessage()
			assert.Nil(t, m)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
			require.EqualError(t, err, tc.text)
			assert.Equal(t, before, openFDs(t))
		})
	}
}

func TestAPartialWriteIsCompleted(t *testing.T) {
	ev := eventfd(t)
	s := &scripted{first: 5}
	m := &Message{Header: Header{Request: SetVringCall, Flags: FlagVersion}, Payload: VringFD{Index: 1}.Bytes(), Files: []*os.File{ev}}
	require.NoError(t, (&Conn{c: s}).WriteMessage(m))
	assert.Equal(t, raw(SetVringCall, FlagVersion, 8, VringFD{Index: 1}.Bytes()), s.written)
	assert.NotEmpty(t, s.oob, "the fd goes with the first part")

	s = &scripted{first: 5, werr: errors.New("broken pipe")}
	assert.EqualError(t, (&Conn{c: s}).WriteMessage(m), "send SET_VRING_CALL: broken pipe")
}

func TestClosingAMessageReportsTheFirstFailure(t *testing.T) {
	open := eventfd(t)
	first, second := os.NewFile(uintptr(mustDup(t, open)), "first"), os.NewFile(uintptr(mustDup(t, open)), "second")
	first.Close()
	second.Close()
	m := &Message{Files: []*os.File{open, first, second}}
	assert.EqualError(t, m.Close(), "close first: file already closed")
	assert.Empty(t, m.Files)
	assert.ErrorIs(t, open.Close(), os.ErrClosed, "the others are closed all the same")
	assert.NoError(t, (&Message{}).Close())
}

func TestRefusalsSayWhatWasWanted(t *testing.T) {
	for _, tc := range []struct {
		req     Request
		payload []byte
		fds     int
		want    string
	}{
		{GetFeatures, []byte{1}, 0, "vhost-user GET_FEATURES has a 1-byte payload, want exactly 0"},
		{SetVringKick, VringFD{}.Bytes(), 2, "vhost-user SET_VRING_KICK carries 2 fds, at most 1 allowed"},
		{SetMemTable, MemTable{Regions: []MemRegion{{}}}.Bytes(), 0, "vhost-user SET_MEM_TABLE carries 0 fds, want 1 to 8"},
		{SetMemTable, make([]byte, 39), 1, "vhost-user SET_MEM_TABLE has a 39-byte payload, want 40 to 264"},
		{SetLogBase, make([]byte, 16), 2, "vhost-user SET_LOG_BASE carries 2 fds, at most 1 allowed"},
	} {
		_, _, err := readOne(t, raw(tc.req, FlagVersion, uint32(len(tc.payload)), tc.payload), tc.fds)
		assert.EqualError(t, err, tc.want)
	}
}

func mustDup(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	return fd
}
