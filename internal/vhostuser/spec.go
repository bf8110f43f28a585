package vhostuser

import "fmt"

// Limits of this package, above which a message is refused whatever its
// request.
const (
	// HeaderSize is the wire size of a Header.
	HeaderSize = 12
	// MaxPayload is the largest payload read or written (rust-vmm's
	// MAX_MSG_SIZE). The largest known request, SET_MEM_TABLE with
	// MaxMemTableRegions regions, needs 8+8*32 bytes; a device
	// configuration space is at most 4 KiB less 256 bytes.
	MaxPayload = 4096
	// MaxFDs is the most descriptors one message may carry: QEMU sends at
	// most 8 (VHOST_MEMORY_BASELINE_NREGIONS, with SET_MEM_TABLE).
	MaxFDs = 8
	// MaxMemTableRegions is the most regions in one SET_MEM_TABLE, one fd each.
	MaxMemTableRegions = MaxFDs
)

// ReplyKind says when the back end answers a request.
type ReplyKind int

const (
	// ReplyAck: only if the front end set FlagNeedReply and ProtoReplyAck
	// was negotiated; the answer is a u64, zero for success.
	ReplyAck ReplyKind = iota
	// ReplyAlways: every such request is answered (the GET_* requests,
	// SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE ...), whatever FlagNeedReply.
	ReplyAlways
	// ReplyIfLogShmfd: answered when ProtoLogShmfd was negotiated
	// (SET_LOG_BASE), else treated as ReplyAck.
	ReplyIfLogShmfd
)

// Range is an inclusive range of sizes or counts.
type Range struct{ Min, Max int }

func exactly(n int) Range { return Range{n, n} }

func (r Range) contains(n int) bool { return n >= r.Min && n <= r.Max }

// status says how a reply's u64 tells failure (internal to Call).
type status int

const (
	statusNone    status = iota // the reply carries data, not a status
	statusU64                   // any non-zero u64 is a failure
	statusLowByte               // bits 0-7 are the error (SET_DEVICE_STATE_FD)
)

// Spec is one row of the table: the rules of one request and its reply.
type Spec struct {
	Request   Request
	Size      Range     // payload bytes of the request
	FDs       Range     // descriptors carried by the request
	Reply     ReplyKind // when the back end answers
	ReplySize Range     // payload bytes of the answer
	ReplyFDs  Range     // descriptors carried by the answer
	status    status
	// check is a rule across fields (payload content against fd count);
	// it returns "" or the broken rule. The size is already checked.
	check func(payload []byte, nfds int) string
	// replyCheck is check for the reply.
	replyCheck func(payload []byte, nfds int) string
}

var (
	none    = exactly(0)
	u64     = exactly(8)
	oneFD   = exactly(1)
	optFD   = Range{0, 1}
	ackSize = u64
)

// table is the one table of requests (vhost-user.rst, "Front-end message
// types"; sizes as QEMU sends them and rust-vmm's vhost reads them).
var table = [...]Spec{
	GetFeatures:         {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none},
	SetFeatures:         {Size: u64, FDs: none},
	SetOwner:            {Size: none, FDs: none},
	ResetOwner:          {Size: none, FDs: none},
	SetMemTable:         {Size: Range{memTableHeader + memRegionSize, memTableHeader + MaxMemTableRegions*memRegionSize}, FDs: Range{1, MaxMemTableRegions}, check: checkMemTable},
	SetLogBase:          {Size: exactly(logSize), FDs: optFD, Reply: ReplyIfLogShmfd, ReplySize: Range{0, logSize}, ReplyFDs: none},
	SetLogFD:            {Size: none, FDs: oneFD},
	SetVringNum:         {Size: exactly(vringStateSize), FDs: none},
	SetVringAddr:        {Size: exactly(vringAddrSize), FDs: none},
	SetVringBase:        {Size: exactly(vringStateSize), FDs: none},
	GetVringBase:        {Size: exactly(vringStateSize), FDs: none, Reply: ReplyAlways, ReplySize: exactly(vringStateSize), ReplyFDs: none},
	SetVringKick:        {Size: u64, FDs: optFD, check: checkVringFD},
	SetVringCall:        {Size: u64, FDs: optFD, check: checkVringFD},
	SetVringErr:         {Size: u64, FDs: optFD, check: checkVringFD},
	GetProtocolFeatures: {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none},
	SetProtocolFeatures: {Size: u64, FDs: none},
	GetQueueNum:         {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none},
	SetVringEnable:      {Size: exactly(vringStateSize), FDs: none},
	SendRARP:            {Size: u64, FDs: none},
	NetSetMTU:           {Size: u64, FDs: none},
	SetBackendReqFD:     {Size: none, FDs: oneFD},
	IOTLBMsg:            {Size: exactly(iotlbSize), FDs: none},
	SetVringEndian:      {Size: exactly(vringStateSize), FDs: none},
	GetConfig:           {Size: Range{configHeader + 1, MaxPayload}, FDs: none, Reply: ReplyAlways, ReplySize: Range{configHeader + 1, MaxPayload}, ReplyFDs: none, check: checkConfig, replyCheck: checkConfig},
	SetConfig:           {Size: Range{configHeader + 1, MaxPayload}, FDs: none, check: checkConfig},
	CreateCryptoSession: {Size: Range{8, MaxPayload}, FDs: none, Reply: ReplyAlways, ReplySize: Range{8, MaxPayload}, ReplyFDs: none},
	CloseCryptoSession:  {Size: u64, FDs: none},
	PostcopyAdvise:      {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: Range{0, 8}, ReplyFDs: oneFD},
	PostcopyListen:      {Size: none, FDs: none},
	PostcopyEnd:         {Size: none, FDs: none},
	GetInflightFD:       {Size: exactly(inflightSize), FDs: none, Reply: ReplyAlways, ReplySize: exactly(inflightSize), ReplyFDs: oneFD},
	SetInflightFD:       {Size: exactly(inflightSize), FDs: oneFD},
	GPUSetSocket:        {Size: none, FDs: oneFD},
	ResetDevice:         {Size: none, FDs: none},
	VringKick:           {Size: exactly(vringStateSize), FDs: none},
	GetMaxMemSlots:      {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none},
	AddMemReg:           {Size: exactly(singleMemRegionSize), FDs: oneFD},
	RemMemReg:           {Size: exactly(singleMemRegionSize), FDs: optFD},
	SetStatus:           {Size: u64, FDs: none},
	GetStatus:           {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none},
	GetSharedObject:     {Size: exactly(uuidSize), FDs: none, Reply: ReplyAlways, ReplySize: Range{0, 8}, ReplyFDs: optFD},
	SetDeviceStateFD:    {Size: exactly(deviceStateFDSize), FDs: oneFD, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: optFD, status: statusLowByte, check: checkDeviceStateFD},
	CheckDeviceState:    {Size: none, FDs: none, Reply: ReplyAlways, ReplySize: u64, ReplyFDs: none, status: statusU64},
}

// Lookup returns the rules of r, and false for a request the table does not
// know (which a front end passes on, and counts).
func Lookup(r Request) (Spec, bool) {
	if r == 0 || int(r) >= len(table) {
		return Spec{}, false
	}
	s := table[r]
	s.Request = r
	if s.Reply != ReplyAlways {
		s.ReplySize, s.ReplyFDs = ackSize, none
		if s.Reply == ReplyIfLogShmfd {
			s.ReplySize = Range{0, logSize}
		}
		s.status = statusU64
		if s.Reply == ReplyIfLogShmfd {
			s.status = statusNone
		}
	}
	return s, true
}

// ReplyExpected tells whether the back end answers a message with header h,
// given the protocol features the front end set with SET_PROTOCOL_FEATURES.
func (s Spec) ReplyExpected(h Header, protocolFeatures uint64) bool {
	switch {
	case s.Reply == ReplyAlways:
		return true
	case s.Reply == ReplyIfLogShmfd && protocolFeatures&ProtoLogShmfd != 0:
		return true
	}
	return h.Flags&FlagNeedReply != 0 && protocolFeatures&ProtoReplyAck != 0
}

// checkRequest applies s's rules to a request's payload and fd count.
func (s Spec) checkRequest(payload []byte, nfds int) *ProtocolError {
	if !s.Size.contains(len(payload)) {
		return &ProtocolError{Request: s.Request, Rule: fmt.Sprintf("has a %d-byte payload, %s", len(payload), s.Size.want())}
	}
	if !s.FDs.contains(nfds) {
		return &ProtocolError{Request: s.Request, Rule: fmt.Sprintf("carries %d fds, %s", nfds, s.FDs.want())}
	}
	if s.check != nil {
		if rule := s.check(payload, nfds); rule != "" {
			return &ProtocolError{Request: s.Request, Rule: rule}
		}
	}
	return nil
}

// checkReply applies s's rules to a reply's payload and fd count.
func (s Spec) checkReply(payload []byte, nfds int) *ProtocolError {
	if !s.ReplySize.contains(len(payload)) {
		return &ProtocolError{Request: s.Request, Rule: fmt.Sprintf("reply has a %d-byte payload, %s", len(payload), s.ReplySize.want())}
	}
	if !s.ReplyFDs.contains(nfds) {
		return &ProtocolError{Request: s.Request, Rule: fmt.Sprintf("reply carries %d fds, %s", nfds, s.ReplyFDs.want())}
	}
	if s.replyCheck != nil {
		if rule := s.replyCheck(payload, nfds); rule != "" {
			return &ProtocolError{Request: s.Request, Rule: "reply " + rule}
		}
	}
	return nil
}

func (r Range) want() string {
	switch {
	case r.Min == r.Max:
		return fmt.Sprintf("want exactly %d", r.Min)
	case r.Min == 0:
		return fmt.Sprintf("at most %d allowed", r.Max)
	}
	return fmt.Sprintf("want %d to %d", r.Min, r.Max)
}

func checkMemTable(p []byte, nfds int) string {
	t, err := ParseMemTable(p)
	if err != nil {
		return err.(*PayloadError).Rule
	}
	if len(t.Regions) != nfds {
		return fmt.Sprintf("describes %d regions but carries %d fds, want one fd per region", len(t.Regions), nfds)
	}
	return ""
}

func checkVringFD(p []byte, nfds int) string {
	v, err := ParseVringFD(p)
	if err != nil {
		return err.(*PayloadError).Rule
	}
	switch {
	case v.NoFD && nfds != 0:
		return fmt.Sprintf("sets the no-fd bit for ring %d but carries an fd", v.Index)
	case !v.NoFD && nfds == 0:
		return fmt.Sprintf("carries no fd for ring %d and does not set the no-fd bit", v.Index)
	}
	return ""
}

func checkConfig(p []byte, _ int) string {
	if _, err := ParseConfig(p); err != nil {
		return err.(*PayloadError).Rule
	}
	return ""
}

func checkDeviceStateFD(p []byte, _ int) string {
	if _, err := ParseDeviceStateFD(p); err != nil {
		return err.(*PayloadError).Rule
	}
	return ""
}
