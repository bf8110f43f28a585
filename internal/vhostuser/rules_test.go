package vhostuser

import (
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func u64Bytes(v uint64) []byte { return le.AppendUint64(nil, v) }

func TestContentRulesRefuseWhatTheSizeAloneWouldAllow(t *testing.T) {
	twoRegions := MemTable{Regions: []MemRegion{{Size: 1}, {Size: 2}}}.Bytes()
	nineRegions := le.AppendUint32(nil, 9)
	zeroRegions := make([]byte, memTableHeader+memRegionSize)
	short := le.AppendUint32(nil, 2) // says 2 regions, carries 1
	short = append(short, make([]byte, 4+memRegionSize)...)
	for _, tc := range []struct {
		name    string
		req     Request
		payload []byte
		fds     int
		rule    string
	}{
		{"a memory table with fewer fds than regions", SetMemTable, twoRegions, 1, "describes 2 regions but carries 1 fds"},
		{"a memory table with more fds than regions", SetMemTable, twoRegions, 3, "describes 2 regions but carries 3 fds"},
		{"a memory table of no region", SetMemTable, zeroRegions, 1, "has 0 regions, want 1 to 8"},
		{"a memory table of 9 regions", SetMemTable, append(nineRegions, make([]byte, 4+memRegionSize)...), 1, "has 9 regions"},
		{"a memory table shorter than its count", SetMemTable, short, 1, "with 2 regions is 40 bytes, want 72"},
		{"a kick with the no-fd bit and an fd", SetVringKick, u64Bytes(0x100), 1, "sets the no-fd bit for ring 0 but carries an fd"},
		{"a call with neither fd nor no-fd bit", SetVringCall, u64Bytes(1), 0, "carries no fd for ring 1"},
		{"an err fd with bits above 8", SetVringErr, u64Bytes(0x200), 1, "sets bits above 8"},
		{"a config whose size is not its data", GetConfig, Config{Data: []byte{1, 2}}.Bytes()[:13], 0, "announces 2 bytes of data and carries 1"},
		{"a config of no data", SetConfig, append(make([]byte, configHeader), 0), 0, "announces 0 bytes of data and carries 1"},
		{"a device state direction that does not exist", SetDeviceStateFD, DeviceStateFD{Direction: 2}.Bytes(), 1, "has direction 2"},
		{"a device state phase that does not exist", SetDeviceStateFD, DeviceStateFD{Phase: 1}.Bytes(), 1, "has phase 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, leaked, err := readOne(t, raw(tc.req, FlagVersion, uint32(len(tc.payload)), tc.payload), tc.fds)
			assert.Nil(t, m)
			requireRefused(t, err, tc.req, tc.rule)
			assert.Zero(t, leaked)
		})
	}
}

func TestAConfigReplyMustCarryTheDataItAnnounces(t *testing.T) {
	p := append(Config{Data: []byte{1}}.Bytes(), 2)
	m, leaked, err := readOne(t, raw(GetConfig, FlagVersion|FlagReply, uint32(len(p)), p), 0)
	assert.Nil(t, m)
	requireRefused(t, err, GetConfig, "reply announces 1 bytes of data and carries 2")
	assert.Zero(t, leaked)
	p = Config{Data: []byte{1, 2}}.Bytes()
	m, _, err = readOne(t, raw(GetConfig, FlagVersion|FlagReply, uint32(len(p)), p), 0)
	require.NoError(t, err)
	assert.Equal(t, p, m.Payload)
}

func TestContentRulesAcceptWhatQEMUSends(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     Request
		payload []byte
		fds     int
	}{
		{"a kick fd for ring 255", SetVringKick, VringFD{Index: 255}.Bytes(), 1},
		{"a polled call ring", SetVringCall, VringFD{Index: 1, NoFD: true}.Bytes(), 0},
		{"a memory table of two regions", SetMemTable, MemTable{Regions: []MemRegion{{Size: 1}, {Size: 2}}}.Bytes(), 2},
		{"a device state load", SetDeviceStateFD, DeviceStateFD{Direction: DirectionLoad}.Bytes(), 1},
		{"a config window", SetConfig, Config{Offset: 4, Data: []byte("tag")}.Bytes(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, err := readOne(t, raw(tc.req, FlagVersion, uint32(len(tc.payload)), tc.payload), tc.fds)
			require.NoError(t, err)
			assert.Equal(t, tc.payload, m.Payload)
			assert.Len(t, m.Files, tc.fds)
		})
	}
}

func TestHeaderRulesRefuseABrokenHeaderWhateverTheRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   Request
		flags uint32
		size  uint32
		rule  string
	}{
		{"version 0", GetFeatures, 0, 0, "has version 0, want 1"},
		{"version 2", GetFeatures, 2, 0, "has version 2, want 1"},
		{"version 3", GetFeatures, 3 | FlagNeedReply, 0, "has version 3, want 1"},
		{"an unknown flag", SetOwner, FlagVersion | 0x10, 0, "sets unknown flags 0x10"},
		{"the top flag", SetOwner, FlagVersion | 0x80000000, 0, "sets unknown flags 0x80000000"},
		{"a reply that wants a reply", GetFeatures, FlagVersion | FlagReply | FlagNeedReply, 8, "is a reply that asks for a reply"},
		{"a payload above the limit", Request(99), FlagVersion, MaxPayload + 1, "announces a 4097-byte payload, at most 4096 allowed"},
		{"a huge payload", SetConfig, FlagVersion, 0xffffffff, "announces a 4294967295-byte payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, leaked, err := readOne(t, raw(tc.req, tc.flags, tc.size, nil), 2)
			assert.Nil(t, m)
			requireRefused(t, err, tc.req, tc.rule)
			assert.Zero(t, leaked)
		})
	}
}

func TestUnknownRequestIsPassedBackWithItsFDs(t *testing.T) {
	for _, req := range []Request{0, CheckDeviceState + 1, 99, 0xffffffff} {
		t.Run(req.String(), func(t *testing.T) {
			_, known := Lookup(req)
			assert.False(t, known)
			p := make([]byte, MaxPayload)
			p[0], p[MaxPayload-1] = 7, 9
			m, leaked, err := readOne(t, raw(req, FlagVersion|FlagNeedReply, MaxPayload, p), MaxFDs)
			require.NoError(t, err)
			assert.Zero(t, leaked)
			assert.Equal(t, req, m.Request)
			assert.Equal(t, p, m.Payload)
			assert.Len(t, m.Files, MaxFDs)
			assert.NoError(t, m.Close())
			assert.Empty(t, m.Files)
		})
	}
}

func TestMoreFDsThanAnyMessageMayCarryAreRefusedAndClosed(t *testing.T) {
	m, leaked, err := readOne(t, raw(99, FlagVersion, 0, nil), MaxFDs+1)
	assert.Nil(t, m)
	requireRefused(t, err, 99, "carries more than 8 fds (control data truncated)")
	assert.Zero(t, leaked)
}

func TestHangUpBetweenMessagesIsEOFAndWithinOneIsUnexpected(t *testing.T) {
	whole := raw(SetFeatures, FlagVersion, 8, u64Bytes(1))
	for _, tc := range []struct {
		name string
		sent []byte
		want error
	}{
		{"nothing sent", nil, io.EOF},
		{"half a header", whole[:6], io.ErrUnexpectedEOF},
		{"a header short of one byte", whole[:HeaderSize-1], io.ErrUnexpectedEOF},
		{"a header without its payload", whole[:HeaderSize], io.ErrUnexpectedEOF},
		{"a payload short of one byte", whole[:len(whole)-1], io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, before := fed(t, tc.sent, 1)
			m, err := c.ReadMessage()
			assert.Nil(t, m)
			require.ErrorIs(t, err, tc.want)
			if tc.want == io.EOF {
				assert.Equal(t, io.EOF, err, "a clean hang-up is io.EOF itself")
			}
			assert.Equal(t, before, openFDs(t))
		})
	}
}

func TestReadErrorIsReturnedWrapped(t *testing.T) {
	a, z := socketPair(t)
	_ = a
	c := NewConn(z)
	require.NoError(t, z.Close())
	_, err := c.ReadMessage()
	require.Error(t, err)
	assert.False(t, errors.Is(err, io.EOF))
	assert.Contains(t, err.Error(), "read vhost-user message")
}

func TestBackToBackMessagesKeepTheirOwnFDs(t *testing.T) {
	a, z := socketPair(t)
	ev := eventfd(t)
	sendRaw(t, a, raw(SetVringCall, FlagVersion, 8, VringFD{Index: 0}.Bytes()), ev, 1)
	sendRaw(t, a, raw(SetVringCall, FlagVersion, 8, VringFD{Index: 1, NoFD: true}.Bytes()), nil, 0)
	sendRaw(t, a, raw(SetVringKick, FlagVersion, 8, VringFD{Index: 1}.Bytes()), ev, 1)
	a.CloseWrite()
	c := NewConn(z)
	var got []string
	for {
		m, err := c.ReadMessage()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, m.String())
		m.Close()
	}
	assert.Equal(t, []string{
		"SET_VRING_CALL request (flags 0x1, 8 bytes, 1 fds)",
		"SET_VRING_CALL request (flags 0x1, 8 bytes, 0 fds)",
		"SET_VRING_KICK request (flags 0x1, 8 bytes, 1 fds)",
	}, got)
}

func TestRequestNames(t *testing.T) {
	assert.Equal(t, "GET_FEATURES", GetFeatures.String())
	assert.Equal(t, "SET_BACKEND_REQ_FD", SetBackendReqFD.String())
	assert.Equal(t, "CHECK_DEVICE_STATE", CheckDeviceState.String())
	assert.Equal(t, "REQUEST(0)", Request(0).String())
	assert.Equal(t, "REQUEST(44)", Request(44).String())
	assert.Equal(t, "REQUEST(4294967295)", Request(0xffffffff).String())
	for r := Request(1); r <= CheckDeviceState; r++ {
		assert.NotContains(t, r.String(), "REQUEST(", "code %d", r)
	}
}

func TestReplyExpected(t *testing.T) {
	ack := FlagVersion | FlagNeedReply
	for _, tc := range []struct {
		req      Request
		flags    uint32
		features uint64
		want     bool
	}{
		{GetFeatures, FlagVersion, 0, true},
		{GetVringBase, FlagVersion, 0, true},
		{SetDeviceStateFD, FlagVersion, 0, true},
		{CheckDeviceState, FlagVersion, 0, true},
		{SetVringEnable, ack, ProtoReplyAck, true},
		{SetVringEnable, ack, 0, false},
		{SetVringEnable, FlagVersion, ProtoReplyAck, false},
		{SetVringEnable, FlagVersion, ^uint64(0) &^ ProtoReplyAck, false},
		{SetLogBase, FlagVersion, ProtoLogShmfd, true},
		{SetLogBase, FlagVersion, 0, false},
		{SetLogBase, ack, ProtoReplyAck, true},
		{SetLogBase, FlagVersion, ProtoReplyAck, false},
	} {
		s, _ := Lookup(tc.req)
		assert.Equal(t, tc.want, s.ReplyExpected(Header{Request: tc.req, Flags: tc.flags}, tc.features), "%s flags %#x features %#x", tc.req, tc.flags, tc.features)
	}
}

func TestLookupFillsTheAckReplyRules(t *testing.T) {
	s, ok := Lookup(SetVringEnable)
	require.True(t, ok)
	assert.Equal(t, SetVringEnable, s.Request)
	assert.Equal(t, ReplyAck, s.Reply)
	assert.Equal(t, Range{8, 8}, s.ReplySize)
	assert.Equal(t, Range{0, 0}, s.ReplyFDs)
	s, _ = Lookup(SetLogBase)
	assert.Equal(t, Range{0, 16}, s.ReplySize)
	s, _ = Lookup(GetInflightFD)
	assert.Equal(t, Range{24, 24}, s.ReplySize)
	assert.Equal(t, Range{1, 1}, s.ReplyFDs)
}
