package vhostuser

import (
	"encoding/binary"
	"fmt"
)

// Payload sizes on the wire (vhost-user.rst, "Message types").
const (
	u64Size             = 8
	vringStateSize      = 8
	vringAddrSize       = 40
	memRegionSize       = 32
	memTableHeader      = 8 // num_regions u32, padding u32
	singleMemRegionSize = 8 + memRegionSize
	logSize             = 16
	iotlbSize           = 32 // struct vhost_iotlb_msg, padded
	configHeader        = 12 // offset, size, flags
	inflightSize        = 24 // mmap_size, mmap_offset, num_queues u16, queue_size u16, padded
	uuidSize            = 16
	deviceStateFDSize   = 8
)

var le = binary.LittleEndian

// PayloadError is a payload that breaks its layout's rule.
type PayloadError struct {
	Payload string // the layout, e.g. "VringState"
	Rule    string // what is wrong, e.g. "is 7 bytes, want 8"
}

func (e *PayloadError) Error() string {
	return "vhost-user " + e.Payload + " payload " + e.Rule
}

func sizeError(name string, got, want int) error {
	return &PayloadError{Payload: name, Rule: fmt.Sprintf("is %d bytes, want %d", got, want)}
}

// U64 is the payload of the requests that carry one number: features,
// protocol features, the queue count, an ack.
type U64 uint64

// ParseU64 reads an 8-byte payload.
func ParseU64(p []byte) (U64, error) {
	if len(p) != u64Size {
		return 0, sizeError("u64", len(p), u64Size)
	}
	return U64(le.Uint64(p)), nil
}

// Bytes is the wire form of u.
func (u U64) Bytes() []byte { return le.AppendUint64(nil, uint64(u)) }

// VringState is the payload of SET_VRING_NUM, SET_VRING_BASE,
// GET_VRING_BASE (and its reply), SET_VRING_ENABLE, SET_VRING_ENDIAN and
// VRING_KICK: a ring index and a number.
type VringState struct{ Index, Num uint32 }

// ParseVringState reads an 8-byte payload.
func ParseVringState(p []byte) (VringState, error) {
	if len(p) != vringStateSize {
		return VringState{}, sizeError("VringState", len(p), vringStateSize)
	}
	return VringState{Index: le.Uint32(p), Num: le.Uint32(p[4:])}, nil
}

// Bytes is the wire form of s.
func (s VringState) Bytes() []byte {
	return le.AppendUint32(le.AppendUint32(nil, s.Index), s.Num)
}

// VringAddr is the payload of SET_VRING_ADDR: a ring's guest (user)
// addresses.
type VringAddr struct {
	Index, Flags           uint32
	Desc, Used, Avail, Log uint64
}

// ParseVringAddr reads a 40-byte payload.
func ParseVringAddr(p []byte) (VringAddr, error) {
	if len(p) != vringAddrSize {
		return VringAddr{}, sizeError("VringAddr", len(p), vringAddrSize)
	}
	return VringAddr{
		Index: le.Uint32(p), Flags: le.Uint32(p[4:]),
		Desc: le.Uint64(p[8:]), Used: le.Uint64(p[16:]), Avail: le.Uint64(p[24:]), Log: le.Uint64(p[32:]),
	}, nil
}

// Bytes is the wire form of a.
func (a VringAddr) Bytes() []byte {
	b := le.AppendUint32(nil, a.Index)
	b = le.AppendUint32(b, a.Flags)
	for _, v := range []uint64{a.Desc, a.Used, a.Avail, a.Log} {
		b = le.AppendUint64(b, v)
	}
	return b
}

// VringFD is the u64 payload of SET_VRING_KICK, SET_VRING_CALL and
// SET_VRING_ERR: bits 0-7 the ring index, bit 8 set when no fd is passed
// (the ring is polled).
type VringFD struct {
	Index uint8
	NoFD  bool
}

const (
	vringIndexMask = 0xff
	vringNoFDMask  = 0x100
)

// ParseVringFD reads an 8-byte payload; bits above 8 must be clear.
func ParseVringFD(p []byte) (VringFD, error) {
	if len(p) != u64Size {
		return VringFD{}, sizeError("VringFD", len(p), u64Size)
	}
	v := le.Uint64(p)
	if v&^(vringIndexMask|vringNoFDMask) != 0 {
		return VringFD{}, &PayloadError{Payload: "VringFD", Rule: fmt.Sprintf("%#x sets bits above 8", v)}
	}
	return VringFD{Index: uint8(v & vringIndexMask), NoFD: v&vringNoFDMask != 0}, nil
}

// Bytes is the wire form of v.
func (v VringFD) Bytes() []byte {
	u := uint64(v.Index)
	if v.NoFD {
		u |= vringNoFDMask
	}
	return le.AppendUint64(nil, u)
}

// MemRegion is one guest memory region, whose memory is the fd passed
// with it from MmapOffset on.
type MemRegion struct {
	GuestAddr, Size, UserAddr, MmapOffset uint64
}

func parseMemRegion(p []byte) MemRegion {
	return MemRegion{GuestAddr: le.Uint64(p), Size: le.Uint64(p[8:]), UserAddr: le.Uint64(p[16:]), MmapOffset: le.Uint64(p[24:])}
}

func (r MemRegion) append(b []byte) []byte {
	for _, v := range []uint64{r.GuestAddr, r.Size, r.UserAddr, r.MmapOffset} {
		b = le.AppendUint64(b, v)
	}
	return b
}

// MemTable is the payload of SET_MEM_TABLE: num_regions (u32), padding
// (u32), then the regions; one fd per region comes with it, in order.
type MemTable struct{ Regions []MemRegion }

// ParseMemTable reads a table of 1 to MaxMemTableRegions regions whose
// length matches its count.
func ParseMemTable(p []byte) (MemTable, error) {
	if len(p) < memTableHeader {
		return MemTable{}, &PayloadError{Payload: "MemTable", Rule: fmt.Sprintf("is %d bytes, shorter than its %d-byte header", len(p), memTableHeader)}
	}
	n := le.Uint32(p)
	if n == 0 || n > MaxMemTableRegions {
		return MemTable{}, &PayloadError{Payload: "MemTable", Rule: fmt.Sprintf("has %d regions, want 1 to %d", n, MaxMemTableRegions)}
	}
	if want := memTableHeader + int(n)*memRegionSize; len(p) != want {
		return MemTable{}, &PayloadError{Payload: "MemTable", Rule: fmt.Sprintf("with %d regions is %d bytes, want %d", n, len(p), want)}
	}
	t := MemTable{Regions: make([]MemRegion, n)}
	for i := range t.Regions {
		t.Regions[i] = parseMemRegion(p[memTableHeader+i*memRegionSize:])
	}
	return t, nil
}

// Bytes is the wire form of t.
func (t MemTable) Bytes() []byte {
	b := le.AppendUint32(nil, uint32(len(t.Regions)))
	b = le.AppendUint32(b, 0)
	for _, r := range t.Regions {
		b = r.append(b)
	}
	return b
}

// SingleMemRegion is the payload of ADD_MEM_REG and REM_MEM_REG: u64
// padding, then one region.
type SingleMemRegion struct{ MemRegion }

// ParseSingleMemRegion reads a 40-byte payload.
func ParseSingleMemRegion(p []byte) (SingleMemRegion, error) {
	if len(p) != singleMemRegionSize {
		return SingleMemRegion{}, sizeError("SingleMemRegion", len(p), singleMemRegionSize)
	}
	return SingleMemRegion{parseMemRegion(p[8:])}, nil
}

// Bytes is the wire form of r.
func (r SingleMemRegion) Bytes() []byte { return r.append(make([]byte, 8)) }

// Log is the payload of SET_LOG_BASE: the dirty log's size and its offset
// in the fd passed with it.
type Log struct{ MmapSize, MmapOffset uint64 }

// ParseLog reads a 16-byte payload.
func ParseLog(p []byte) (Log, error) {
	if len(p) != logSize {
		return Log{}, sizeError("Log", len(p), logSize)
	}
	return Log{MmapSize: le.Uint64(p), MmapOffset: le.Uint64(p[8:])}, nil
}

// Bytes is the wire form of l.
func (l Log) Bytes() []byte { return le.AppendUint64(le.AppendUint64(nil, l.MmapSize), l.MmapOffset) }

// Config is the payload of GET_CONFIG (and its reply) and SET_CONFIG: a
// window of the device's configuration space.
type Config struct {
	Offset, Flags uint32
	Data          []byte // len(Data) is the header's size field
}

// ParseConfig reads a 12-byte header and the size bytes it announces, at
// least one.
func ParseConfig(p []byte) (Config, error) {
	if len(p) < configHeader {
		return Config{}, &PayloadError{Payload: "Config", Rule: fmt.Sprintf("is %d bytes, shorter than its %d-byte header", len(p), configHeader)}
	}
	size := le.Uint32(p[4:])
	if size == 0 || uint64(size) != uint64(len(p)-configHeader) {
		return Config{}, &PayloadError{Payload: "Config", Rule: fmt.Sprintf("announces %d bytes of data and carries %d", size, len(p)-configHeader)}
	}
	return Config{Offset: le.Uint32(p), Flags: le.Uint32(p[8:]), Data: p[configHeader:]}, nil
}

// Bytes is the wire form of c.
func (c Config) Bytes() []byte {
	b := le.AppendUint32(nil, c.Offset)
	b = le.AppendUint32(b, uint32(len(c.Data)))
	b = le.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}

// Directions and phases of SET_DEVICE_STATE_FD.
const (
	DirectionSave uint32 = 0 // the back end writes its state into the fd
	DirectionLoad uint32 = 1 // the back end reads its state from the fd
	PhaseStopped  uint32 = 0 // the only phase: the device and its rings are stopped
)

// DeviceStateFD is the payload of SET_DEVICE_STATE_FD.
type DeviceStateFD struct{ Direction, Phase uint32 }

// ParseDeviceStateFD reads an 8-byte payload with a known direction and
// phase.
func ParseDeviceStateFD(p []byte) (DeviceStateFD, error) {
	if len(p) != deviceStateFDSize {
		return DeviceStateFD{}, sizeError("DeviceStateFD", len(p), deviceStateFDSize)
	}
	d := DeviceStateFD{Direction: le.Uint32(p), Phase: le.Uint32(p[4:])}
	if d.Direction > DirectionLoad {
		return DeviceStateFD{}, &PayloadError{Payload: "DeviceStateFD", Rule: fmt.Sprintf("has direction %d, want 0 (save) or 1 (load)", d.Direction)}
	}
	if d.Phase != PhaseStopped {
		return DeviceStateFD{}, &PayloadError{Payload: "DeviceStateFD", Rule: fmt.Sprintf("has phase %d, want 0 (stopped)", d.Phase)}
	}
	return d, nil
}

// Bytes is the wire form of d.
func (d DeviceStateFD) Bytes() []byte {
	return le.AppendUint32(le.AppendUint32(nil, d.Direction), d.Phase)
}

// DeviceStateReply is the u64 reply to SET_DEVICE_STATE_FD: bits 0-7 an
// error (0 for success), bit 8 set when the back end returns no fd of its
// own (the front end's fd is used).
type DeviceStateReply struct {
	Error uint8
	NoFD  bool
}

// ParseDeviceStateReply reads an 8-byte payload; bits above 8 must be clear.
func ParseDeviceStateReply(p []byte) (DeviceStateReply, error) {
	if len(p) != u64Size {
		return DeviceStateReply{}, sizeError("DeviceStateReply", len(p), u64Size)
	}
	v := le.Uint64(p)
	if v&^0x1ff != 0 {
		return DeviceStateReply{}, &PayloadError{Payload: "DeviceStateReply", Rule: fmt.Sprintf("%#x sets bits above 8", v)}
	}
	return DeviceStateReply{Error: uint8(v), NoFD: v&0x100 != 0}, nil
}

// Bytes is the wire form of r.
func (r DeviceStateReply) Bytes() []byte {
	u := uint64(r.Error)
	if r.NoFD {
		u |= 0x100
	}
	return le.AppendUint64(nil, u)
}
