package front

import (
	"fmt"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// ring is what the VM set up for one virtqueue, with dups of its fds.
type ring struct {
	num, base       uint32
	addr            vhostuser.VringAddr
	hasNum, hasBase bool
	hasAddr         bool
	kick, call, err *eventFD
	// started: the back end got a kick fd since the ring was last stopped
	// (GET_VRING_BASE) or reset. enabled: SET_VRING_ENABLE 1 since.
	started, enabled bool
}

// eventFD is a recorded SET_VRING_KICK/CALL/ERR: a dup of the fd, or none
// (the "no fd" bit: polling).
type eventFD struct {
	fd   *held // nil with noFD
	noFD bool
}

func (e *eventFD) close() {
	if e != nil {
		e.fd.Close()
	}
}

// conn is e's descriptor for a checkpoint or the crash record: nil (not a
// nil *held) when there is none.
func (e *eventFD) conn() syscall.Conn {
	if e.fd == nil {
		return nil
	}
	return e.fd
}

// region is a recorded memory region with a dup of its fd.
type region struct {
	vhostuser.MemRegion
	file *os.File
}

// setup is everything the VM set up on its back end, as the front relayed
// it, so that it can be replayed onto another back end. The fds are the
// front's own dups; close releases them.
type setup struct {
	// protocolFeatures are those the VM set (SET_PROTOCOL_FEATURES), what
	// its side of the session follows.
	features, protocolFeatures       uint64
	hasFeatures, hasProtocolFeatures bool
	// offeredProtocol is what the back end offered (its reply to the VM's
	// GET_PROTOCOL_FEATURES), hasOffered once the front has seen it.
	offeredProtocol uint64
	hasOffered      bool
	// backendProtocol is what the back end got: the VM's set plus those of
	// frontProtocol it offered (see augment). Every replay sends it.
	backendProtocol uint64
	owner           bool
	regions         []region
	rings           map[uint32]*ring
	backendReq      *os.File
	logBase         []byte // SET_LOG_BASE payload, nil when none
	logFile         *os.File
	// unswappable says why the session can no longer be swapped ("" while
	// it can): something was relayed that cannot be replayed.
	unswappable string
	unknown     int
}

func newSetup() *setup { return &setup{rings: map[uint32]*ring{}} }

// frontProtocol are the protocol features the front itself needs of the
// back end, whatever the VM negotiated: DEVICE_STATE for the swap's state
// transfer, REPLY_ACK for the acks of its own messages. QEMU before 8.2
// negotiates no DEVICE_STATE.
const frontProtocol = vhostuser.ProtoDeviceState | vhostuser.ProtoReplyAck

// augment is the set of protocol features the back end gets when the VM
// sets vm: vm plus those of frontProtocol the back end offered. They
// change nothing in virtiofsd's behaviour towards the VM (vhost 0.13,
// vhost-user-backend 0.17): DEVICE_STATE only enables SET_DEVICE_STATE_FD
// and CHECK_DEVICE_STATE, which only the front sends, and REPLY_ACK only
// makes it ack requests that carry NEED_REPLY, which the front clears on
// the VM's requests while the VM has not negotiated REPLY_ACK (stripNeedReply).
// One more effect of REPLY_ACK: vhost-user-backend then sets NEED_REPLY on
// virtiofsd's own requests on the back-end channel, which QEMU acks by
// that flag alone; the Rust virtiofsd sends none there without DAX, and
// QEMU 7.2 and 10 negotiate REPLY_ACK anyway.
func (s *setup) augment(vm uint64) uint64 {
	if !s.hasOffered {
		return vm
	}
	return vm | s.offeredProtocol&frontProtocol
}

// toBackend makes a recorded request of the VM's what the back end gets:
// SET_PROTOCOL_FEATURES carries backendProtocol, and NEED_REPLY is
// cleared where stripNeedReply says.
func (s *setup) toBackend(m *vhostuser.Message) {
	if m.Request == vhostuser.SetProtocolFeatures && s.backendProtocol != s.protocolFeatures {
		// Only a payload that was recorded: a malformed one goes as it came.
		if v, err := vhostuser.ParseU64(m.Payload); err == nil && uint64(v) == s.protocolFeatures {
			m.Payload = vhostuser.U64(s.backendProtocol).Bytes()
		}
	}
	if s.stripNeedReply() {
		m.Flags &^= vhostuser.FlagNeedReply
	}
}

// stripNeedReply says whether NEED_REPLY must be cleared on the VM's
// requests: the back end acks on REPLY_ACK the VM did not negotiate, and
// the VM would read an ack it never asked for.
func (s *setup) stripNeedReply() bool {
	return s.protocolFeatures&vhostuser.ProtoReplyAck == 0 && s.backendProtocol&vhostuser.ProtoReplyAck != 0
}

func (s *setup) ring(i uint32) *ring {
	r, ok := s.rings[i]
	if !ok {
		r = &ring{}
		s.rings[i] = r
	}
	return r
}

// notReplayed says whether relaying a known request makes the session
// unswappable: its effect on the back end is not replayed on a new one.
// SET_DEVICE_STATE_FD is not among them: a state a migration loaded (or
// saved) is virtiofsd's own state from then on, which the next swap's SAVE
// carries like any other, so a VM that came in by a live migration can be
// reloaded and restarted (test/migrationtest holds that on the real binaries).
func notReplayed(r vhostuser.Request) bool {
	switch r {
	case vhostuser.SetConfig, vhostuser.SetInflightFD, vhostuser.IOTLBMsg, vhostuser.SetVringEndian,
		vhostuser.PostcopyAdvise, vhostuser.PostcopyListen, vhostuser.SetStatus, vhostuser.GPUSetSocket,
		vhostuser.NetSetMTU, vhostuser.SetLogFD:
		return true
	}
	return false
}

func (s *setup) markUnswappable(reason string) {
	if s.unswappable == "" {
		s.unswappable = reason
	}
}

// recordRequest notes what a request from the VM sets up. It runs before the
// request is passed on; m keeps its fds (the front records dups). A
// request whose payload does not parse is not recorded and makes the
// session unswappable (the back end judges it).
func (s *setup) recordRequest(m *vhostuser.Message, known bool) {
	if !known {
		s.unknown++
		s.markUnswappable(fmt.Sprintf("the VM sent %s, which the front does not know", m.Request))
		return
	}
	if notReplayed(m.Request) {
		s.markUnswappable(fmt.Sprintf("the VM sent %s, which the front does not replay", m.Request))
		return
	}
	if err := s.record(m); err != nil {
		s.markUnswappable(fmt.Sprintf("the front could not record %s: %v", m.Request, err))
	}
}

func (s *setup) record(m *vhostuser.Message) error {
	switch m.Request {
	case vhostuser.SetFeatures:
		v, err := vhostuser.ParseU64(m.Payload)
		if err != nil {
			return err
		}
		s.features, s.hasFeatures = uint64(v), true
		if s.features&vhostuser.FeatureRingPacked != 0 {
			s.markUnswappable("the VM negotiated a packed ring (VIRTIO_F_RING_PACKED), which the front cannot stop and restart")
		}
	case vhostuser.SetProtocolFeatures:
		v, err := vhostuser.ParseU64(m.Payload)
		if err != nil {
			return err
		}
		s.protocolFeatures, s.hasProtocolFeatures = uint64(v), true
		s.backendProtocol = s.augment(uint64(v))
	case vhostuser.SetOwner:
		s.owner = true
	case vhostuser.ResetOwner:
		s.owner = false
		s.resetRings()
	case vhostuser.ResetDevice:
		s.resetRings()
	case vhostuser.SetMemTable:
		t, err := vhostuser.ParseMemTable(m.Payload)
		if err != nil {
			return err
		}
		if len(m.Files) != len(t.Regions) {
			return fmt.Errorf("%d regions with %d fds", len(t.Regions), len(m.Files))
		}
		var regions []region
		for i, r := range t.Regions {
			f, err := dup(m.Files[i])
			if err != nil {
				closeRegions(regions)
				return err
			}
			regions = append(regions, region{MemRegion: r, file: f})
		}
		closeRegions(s.regions)
		s.regions = regions
	case vhostuser.AddMemReg:
		r, err := vhostuser.ParseSingleMemRegion(m.Payload)
		if err != nil {
			return err
		}
		if len(m.Files) != 1 {
			return fmt.Errorf("%d fds", len(m.Files))
		}
		f, err := dup(m.Files[0])
		if err != nil {
			return err
		}
		s.regions = append(s.regions, region{MemRegion: r.MemRegion, file: f})
	case vhostuser.RemMemReg:
		r, err := vhostuser.ParseSingleMemRegion(m.Payload)
		if err != nil {
			return err
		}
		for i, have := range s.regions {
			if have.GuestAddr == r.GuestAddr && have.Size == r.Size {
				have.file.Close()
				s.regions = append(s.regions[:i], s.regions[i+1:]...)
				break
			}
		}
	case vhostuser.SetLogBase:
		if len(m.Files) > 0 {
			if err := keep(&s.logFile, m.Files); err != nil {
				return err
			}
		}
		s.logBase = append([]byte(nil), m.Payload...)
	case vhostuser.SetBackendReqFD:
		return keep(&s.backendReq, m.Files)
	case vhostuser.SetVringNum, vhostuser.SetVringBase, vhostuser.SetVringEnable:
		v, err := vhostuser.ParseVringState(m.Payload)
		if err != nil {
			return err
		}
		r := s.ring(v.Index)
		switch m.Request {
		case vhostuser.SetVringNum:
			r.num, r.hasNum = v.Num, true
		case vhostuser.SetVringBase:
			r.base, r.hasBase = v.Num, true
		default:
			r.enabled = v.Num != 0
		}
	case vhostuser.SetVringAddr:
		a, err := vhostuser.ParseVringAddr(m.Payload)
		if err != nil {
			return err
		}
		r := s.ring(a.Index)
		r.addr, r.hasAddr = a, true
	case vhostuser.SetVringKick, vhostuser.SetVringCall, vhostuser.SetVringErr:
		v, err := vhostuser.ParseVringFD(m.Payload)
		if err != nil {
			return err
		}
		e := &eventFD{noFD: v.NoFD}
		if !v.NoFD {
			if len(m.Files) != 1 {
				return fmt.Errorf("%d fds", len(m.Files))
			}
			if e.fd, err = hold(m.Files[0], m.Files[0].Name()); err != nil {
				return err
			}
		}
		r := s.ring(uint32(v.Index))
		switch m.Request {
		case vhostuser.SetVringKick:
			r.kick.close()
			r.kick, r.started = e, true
		case vhostuser.SetVringCall:
			r.call.close()
			r.call = e
		default:
			r.err.close()
			r.err = e
		}
	}
	return nil
}

// recordReply notes what a back end's reply to the VM's request says:
// GET_PROTOCOL_FEATURES what it offers, GET_VRING_BASE that the ring
// stopped at the index it returns.
func (s *setup) recordReply(req *vhostuser.Message, reply *vhostuser.Message) {
	switch req.Request {
	case vhostuser.GetProtocolFeatures:
		if v, err := vhostuser.ParseU64(reply.Payload); err == nil {
			s.offeredProtocol, s.hasOffered = uint64(v), true
		}
		return
	case vhostuser.GetVringBase:
	default:
		return
	}
	v, err := vhostuser.ParseVringState(reply.Payload)
	if err != nil {
		s.markUnswappable(fmt.Sprintf("the front could not record the reply to %s: %v", req.Request, err))
		return
	}
	r := s.ring(v.Index)
	r.base, r.hasBase = v.Num, true
	r.started, r.enabled = false, false
}

// resetRings forgets the rings' layout and state, as a back end does on
// RESET_DEVICE; the call and err fds stay (QEMU sends them again anyway).
func (s *setup) resetRings() {
	for _, r := range s.rings {
		r.kick.close()
		r.kick = nil
		r.hasNum, r.hasAddr, r.hasBase = false, false, false
		r.started, r.enabled = false, false
	}
}

func (s *setup) close() {
	closeRegions(s.regions)
	s.regions = nil
	for _, r := range s.rings {
		r.kick.close()
		r.call.close()
		r.err.close()
	}
	s.rings = map[uint32]*ring{}
	for _, f := range []*os.File{s.backendReq, s.logFile} {
		if f != nil {
			f.Close()
		}
	}
	s.backendReq, s.logFile = nil, nil
}

// keep replaces *held with a dup of a message's one fd.
func keep(held **os.File, files []*os.File) error {
	if len(files) != 1 {
		return fmt.Errorf("%d fds, want 1", len(files))
	}
	f, err := dup(files[0])
	if err != nil {
		return err
	}
	if *held != nil {
		(*held).Close()
	}
	*held = f
	return nil
}

func closeRegions(rs []region) {
	for _, r := range rs {
		r.file.Close()
	}
}

// dup returns a close-on-exec duplicate of f's descriptor. It never calls
// f.Fd(), which would turn a non-blocking fd (QEMU's eventfds) blocking
// for every process that shares it.
func dup(f *os.File) (*os.File, error) {
	return dupOf(f, f.Name())
}

// dupOf is dup for anything with a descriptor, such as a connection.
func dupOf(c syscall.Conn, name string) (*os.File, error) {
	fd, err := dupFD(c, name)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// dupFD returns a close-on-exec duplicate of c's descriptor.
func dupFD(c syscall.Conn, name string) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("duplicate %s: %w", name, err)
	}
	nfd := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("duplicate %s: %w", name, err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("duplicate %s: %w (raise the shim's fd limit, LimitNOFILE=)", name, dupErr)
	}
	return nfd, nil
}

// kick writes 1 to an eventfd, as a guest's notification does, without
// changing its blocking mode.
func kick(f syscall.Conn) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		var one [8]byte
		one[0] = 1
		_, werr = unix.Write(int(fd), one[:])
	}); err != nil {
		return err
	}
	return werr
}

// swapRefusal says why the session cannot be swapped now, "" when it can.
func (s *setup) swapRefusal() string {
	switch {
	case s.unswappable != "":
		return s.unswappable
	case !s.hasProtocolFeatures || s.backendProtocol&vhostuser.ProtoReplyAck == 0:
		return "virtiofsd has not negotiated REPLY_ACK (neither the VM nor the front could set it), so the front cannot check its answers"
	case s.backendProtocol&vhostuser.ProtoDeviceState == 0:
		return "virtiofsd has not negotiated DEVICE_STATE (it did not offer it), so it cannot hand its state over; install a virtiofsd that offers it"
	case s.features&vhostuser.FeatureLogAll != 0:
		return "dirty logging is on (a live migration is under way); retry when it has ended"
	}
	return ""
}

// ringIndexes are the recorded rings' indexes in order.
func (s *setup) ringIndexes() []uint32 {
	var is []uint32
	for i := range s.rings {
		is = append(is, i)
	}
	slices.Sort(is)
	return is
}
