package vhostuser

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPayloadsRoundTripInTheirWireLayout(t *testing.T) {
	addr := VringAddr{Index: 1, Flags: 1, Desc: 0x10, Used: 0x20, Avail: 0x30, Log: 0x40}
	region := MemRegion{GuestAddr: 1, Size: 2, UserAddr: 3, MmapOffset: 4}
	wantRegion := []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0}

	assert.Equal(t, []byte{0x8, 0x7, 0x6, 0x5, 0x4, 0x3, 0x2, 0x1}, U64(0x0102030405060708).Bytes())
	assert.Equal(t, []byte{1, 0, 0, 0, 0, 4, 0, 0}, VringState{Index: 1, Num: 1024}.Bytes())
	assert.Equal(t, []byte{1, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0}, addr.Bytes())
	assert.Equal(t, []byte{3, 1, 0, 0, 0, 0, 0, 0}, VringFD{Index: 3, NoFD: true}.Bytes())
	assert.Equal(t, []byte{3, 0, 0, 0, 0, 0, 0, 0}, VringFD{Index: 3}.Bytes())
	assert.Equal(t, append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, wantRegion...), MemTable{Regions: []MemRegion{region}}.Bytes())
	assert.Equal(t, append(make([]byte, 8), wantRegion...), SingleMemRegion{region}.Bytes())
	assert.Equal(t, []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}, Log{MmapSize: 1, MmapOffset: 2}.Bytes())
	assert.Equal(t, []byte{4, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 'h', 'i'}, Config{Offset: 4, Flags: 1, Data: []byte("hi")}.Bytes())
	assert.Equal(t, []byte{1, 0, 0, 0, 0, 0, 0, 0}, DeviceStateFD{Direction: DirectionLoad}.Bytes())
	assert.Equal(t, []byte{5, 1, 0, 0, 0, 0, 0, 0}, DeviceStateReply{Error: 5, NoFD: true}.Bytes())
	assert.Equal(t, []byte{0, 0, 0, 0, 0, 0, 0, 0}, DeviceStateReply{}.Bytes())

	u, err := ParseU64(U64(42).Bytes())
	require.NoError(t, err)
	assert.Equal(t, U64(42), u)
	vs, err := ParseVringState(VringState{Index: 7, Num: 9}.Bytes())
	require.NoError(t, err)
	assert.Equal(t, VringState{Index: 7, Num: 9}, vs)
	va, err := ParseVringAddr(addr.Bytes())
	require.NoError(t, err)
	assert.Equal(t, addr, va)
	for _, v := range []VringFD{{Index: 255, NoFD: true}, {Index: 0}, {Index: 17}} {
		got, err := ParseVringFD(v.Bytes())
		require.NoError(t, err)
		assert.Equal(t, v, got)
	}
	full := MemTable{Regions: make([]MemRegion, MaxMemTableRegions)}
	for i := range full.Regions {
		full.Regions[i] = MemRegion{GuestAddr: uint64(i), Size: uint64(i + 1), UserAddr: uint64(i + 2), MmapOffset: uint64(i + 3)}
	}
	mt, err := ParseMemTable(full.Bytes())
	require.NoError(t, err)
	assert.Equal(t, full, mt)
	sr, err := ParseSingleMemRegion(SingleMemRegion{region}.Bytes())
	require.NoError(t, err)
	assert.Equal(t, SingleMemRegion{region}, sr)
	lg, err := ParseLog(Log{MmapSize: 1, MmapOffset: 2}.Bytes())
	require.NoError(t, err)
	assert.Equal(t, Log{MmapSize: 1, MmapOffset: 2}, lg)
	cf, err := ParseConfig(Config{Offset: 4, Flags: 1, Data: []byte("hi")}.Bytes())
	require.NoError(t, err)
	assert.Equal(t, Config{Offset: 4, Flags: 1, Data: []byte("hi")}, cf)
	for _, d := range []DeviceStateFD{{Direction: DirectionSave}, {Direction: DirectionLoad}} {
		got, err := ParseDeviceStateFD(d.Bytes())
		require.NoError(t, err)
		assert.Equal(t, d, got)
	}
	for _, r := range []DeviceStateReply{{Error: 255, NoFD: true}, {}, {Error: 1}} {
		got, err := ParseDeviceStateReply(r.Bytes())
		require.NoError(t, err)
		assert.Equal(t, r, got)
	}
}

func TestPayloadParsersRefuseTheWrongLength(t *testing.T) {
	parsers := map[string]struct {
		size  int
		parse func([]byte) error
	}{
		"u64":              {8, func(p []byte) error { _, err := ParseU64(p); return err }},
		"VringState":       {8, func(p []byte) error { _, err := ParseVringState(p); return err }},
		"VringAddr":        {40, func(p []byte) error { _, err := ParseVringAddr(p); return err }},
		"VringFD":          {8, func(p []byte) error { _, err := ParseVringFD(p); return err }},
		"SingleMemRegion":  {40, func(p []byte) error { _, err := ParseSingleMemRegion(p); return err }},
		"Log":              {16, func(p []byte) error { _, err := ParseLog(p); return err }},
		"DeviceStateFD":    {8, func(p []byte) error { _, err := ParseDeviceStateFD(p); return err }},
		"DeviceStateReply": {8, func(p []byte) error { _, err := ParseDeviceStateReply(p); return err }},
	}
	for name, p := range parsers {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, p.parse(make([]byte, p.size)))
			for _, n := range []int{0, p.size - 1, p.size + 1} {
				err := p.parse(make([]byte, n))
				var perr *PayloadError
				require.ErrorAs(t, err, &perr, "%d bytes", n)
				assert.Equal(t, name, perr.Payload)
				assert.Equal(t, "vhost-user "+name+" payload is "+strconv.Itoa(n)+" bytes, want "+strconv.Itoa(p.size), err.Error())
			}
		})
	}
}

func TestPayloadParsersRefuseBrokenContent(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		rule string
	}{
		{"vring fd bit 9", second(ParseVringFD(u64Bytes(0x200))), "0x200 sets bits above 8"},
		{"vring fd top bit", second(ParseVringFD(u64Bytes(1 << 63))), "0x8000000000000000 sets bits above 8"},
		{"device state reply bit 9", second(ParseDeviceStateReply(u64Bytes(0x200))), "0x200 sets bits above 8"},
		{"memory table shorter than its header", second(ParseMemTable(make([]byte, 7))), "is 7 bytes, shorter than its 8-byte header"},
		{"memory table of 0 regions", second(ParseMemTable(make([]byte, 8))), "has 0 regions, want 1 to 8"},
		{"memory table one byte long", second(ParseMemTable(append(le.AppendUint32(nil, 1), make([]byte, 4+33)...))), "with 1 regions is 41 bytes, want 40"},
		{"memory table one byte short", second(ParseMemTable(append(le.AppendUint32(nil, 1), make([]byte, 4+31)...))), "with 1 regions is 39 bytes, want 40"},
		{"memory table of 2^32-1 regions", second(ParseMemTable(append(le.AppendUint32(nil, 0xffffffff), make([]byte, 4)...))), "has 4294967295 regions, want 1 to 8"},
		{"config shorter than its header", second(ParseConfig(make([]byte, 11))), "is 11 bytes, shorter than its 12-byte header"},
		{"config without data", second(ParseConfig(make([]byte, 12))), "announces 0 bytes of data and carries 0"},
		{"config longer than announced", second(ParseConfig(append(Config{Data: []byte{1}}.Bytes(), 2))), "announces 1 bytes of data and carries 2"},
		{"config size wraps", second(ParseConfig(append(le.AppendUint32(le.AppendUint32(nil, 0), 0xffffffff), make([]byte, 5)...))), "announces 4294967295 bytes of data and carries 1"},
		{"device state direction 2", second(ParseDeviceStateFD(DeviceStateFD{Direction: 2}.Bytes())), "has direction 2, want 0 (save) or 1 (load)"},
		{"device state phase 1", second(ParseDeviceStateFD(DeviceStateFD{Phase: 1}.Bytes())), "has phase 1, want 0 (stopped)"},
	} {
		var perr *PayloadError
		require.ErrorAs(t, tc.err, &perr, tc.name)
		assert.Equal(t, tc.rule, perr.Rule, tc.name)
	}
}

func second[T any](_ T, err error) error { return err }
