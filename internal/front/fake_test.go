package front

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// socketPair returns the two ends of a connected unix stream socket.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		require.NoError(t, err)
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

func newEventFD(t *testing.T) *os.File {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "eventfd")
	t.Cleanup(func() { f.Close() })
	return f
}

func memFD(t *testing.T) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("guest-ram", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "memfd")
	require.NoError(t, f.Truncate(1<<20))
	t.Cleanup(func() { f.Close() })
	return f
}

// inode identifies the file behind an fd, to tell that two fds are the
// same file.
func inode(t *testing.T, f *os.File) string {
	t.Helper()
	var st unix.Stat_t
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &st) }))
	require.NoError(t, err)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// eventCount reads (and resets) an eventfd's counter: 0 when nothing was
// written.
func eventCount(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var b [8]byte
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	var n int
	require.NoError(t, rc.Control(func(fd uintptr) { n, err = unix.Read(int(fd), b[:]) }))
	if errors.Is(err, unix.EAGAIN) {
		return 0
	}
	require.NoError(t, err)
	require.Equal(t, 8, n)
	return uint64(b[0]) | uint64(b[1])<<8
}

// QEMU 10's features and protocol features for vhost-user-fs, and what the
// Rust virtiofsd 1.13.2 offers (DESIGN.md).
const (
	qemuFeatures      = 0x170000000
	qemuProtocol      = 0x8a42b
	virtiofsdFeatures = 0x170000000 | vhostuser.FeatureLogAll
	virtiofsdProtocol = vhostuser.ProtoMQ | vhostuser.ProtoLogShmfd | vhostuser.ProtoReplyAck |
		vhostuser.ProtoBackendReq | vhostuser.ProtoBackendSendFD | vhostuser.ProtoResetDevice |
		vhostuser.ProtoConfigureMemSlots | vhostuser.ProtoDeviceState
)

// fakeBackend is a virtiofsd on the other end of a socket pair, built on
// internal/vhostuser: it answers as the Rust virtiofsd does, logs every
// request it gets, and fails the test when a ring's kick fd is set while
// the ring is enabled (the order that hangs the real one).
type fakeBackend struct {
	t                  *testing.T
	conn               *vhostuser.Conn
	features, protocol uint64
	state              []byte            // what SAVE writes
	bases              map[uint32]uint32 // GET_VRING_BASE's answers
	failLoad           bool              // CHECK_DEVICE_STATE after a LOAD says 1
	hold               vhostuser.Request // its reply waits for release
	release            chan struct{}

	mu      sync.Mutex
	log     []string
	files   map[string][]*os.File // fds received, by request name
	loaded  []byte
	enabled map[uint32]bool
	acked   uint64 // negotiated protocol features
	// ackedFeatures are the features SET_FEATURES set.
	ackedFeatures uint64
	received      chan string
	done          chan struct{}
}

func newFakeBackend(t *testing.T) (*fakeBackend, *net.UnixConn) {
	front, back := socketPair(t)
	b := &fakeBackend{
		t: t, conn: vhostuser.NewConn(back), features: virtiofsdFeatures, protocol: virtiofsdProtocol,
		state: []byte("fuse state"), bases: map[uint32]uint32{0: 17, 1: 42},
		files: map[string][]*os.File{}, enabled: map[uint32]bool{},
		release: make(chan struct{}), received: make(chan string, 1000), done: make(chan struct{}),
	}
	t.Cleanup(b.stop)
	return b, front
}

func (b *fakeBackend) start() { go b.serve() }

func (b *fakeBackend) stop() {
	b.conn.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, fs := range b.files {
		for _, f := range fs {
			f.Close()
		}
	}
	b.files = map[string][]*os.File{}
}

// Log is what the back end got, in order.
func (b *fakeBackend) Log() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.log)
}

func (b *fakeBackend) Files(req vhostuser.Request) []*os.File {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.files[req.String()])
}

// Acked is the protocol features SET_PROTOCOL_FEATURES set.
func (b *fakeBackend) Acked() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.acked
}

func (b *fakeBackend) Loaded() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.loaded
}

func (b *fakeBackend) serve() {
	defer close(b.done)
	loadFailed := false
	for {
		m, err := b.conn.ReadMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				b.t.Errorf("fake virtiofsd: %v", err)
			}
			return
		}
		entry := describe(m)
		b.mu.Lock()
		b.log = append(b.log, entry)
		b.files[m.Request.String()] = append(b.files[m.Request.String()], m.Files...)
		b.mu.Unlock()
		b.received <- entry
		if m.Request == b.hold && b.hold != 0 {
			<-b.release
		}
		var reply []byte
		switch m.Request {
		case vhostuser.GetFeatures:
			reply = vhostuser.U64(b.features).Bytes()
		case vhostuser.GetProtocolFeatures:
			reply = vhostuser.U64(b.protocol).Bytes()
		case vhostuser.GetQueueNum:
			reply = vhostuser.U64(2).Bytes()
		case vhostuser.GetStatus:
			reply = vhostuser.U64(0xf).Bytes()
		case vhostuser.GetMaxMemSlots:
			reply = vhostuser.U64(509).Bytes()
		case vhostuser.SetProtocolFeatures:
			v, _ := vhostuser.ParseU64(m.Payload)
			b.mu.Lock()
			b.acked = uint64(v)
			b.mu.Unlock()
		case vhostuser.SetFeatures:
			v, _ := vhostuser.ParseU64(m.Payload)
			b.mu.Lock()
			b.ackedFeatures = uint64(v)
			b.mu.Unlock()
		case vhostuser.SetVringEnable:
			v, _ := vhostuser.ParseVringState(m.Payload)
			b.mu.Lock()
			if b.ackedFeatures&vhostuser.FeatureProtocolFeatures == 0 {
				b.mu.Unlock()
				// The real one: "Waiting for daemon failed:
				// HandleRequest(InactiveFeature(...PROTOCOL_FEATURES))", exit.
				b.t.Errorf("fake virtiofsd: SET_VRING_ENABLE before SET_FEATURES acked PROTOCOL_FEATURES: the real one ends")
				b.conn.Close()
				return
			}
			b.enabled[v.Index] = v.Num == 1
			b.mu.Unlock()
		case vhostuser.SetVringKick:
			v, _ := vhostuser.ParseVringFD(m.Payload)
			b.mu.Lock()
			if b.enabled[uint32(v.Index)] {
				b.log = append(b.log, "HANG: kick fd set on an enabled ring")
				b.t.Errorf("fake virtiofsd: SET_VRING_KICK on enabled ring %d: the real one hangs for good", v.Index)
			}
			b.mu.Unlock()
		case vhostuser.GetVringBase:
			v, _ := vhostuser.ParseVringState(m.Payload)
			reply = vhostuser.VringState{Index: v.Index, Num: b.bases[v.Index]}.Bytes()
		case vhostuser.SetDeviceStateFD:
			d, _ := vhostuser.ParseDeviceStateFD(m.Payload)
			f := m.Files[0]
			if fl, err := unix.FcntlInt(uintptr(fdOf(b.t, f)), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
				b.t.Errorf("fake virtiofsd: the state fd is non-blocking (flags %#x, %v): the real one fails with EAGAIN", fl, err)
			}
			if d.Direction == vhostuser.DirectionSave {
				go func() { f.Write(b.state); f.Close() }()
			} else {
				loaded, _ := io.ReadAll(f)
				f.Close()
				b.mu.Lock()
				b.loaded = loaded
				b.mu.Unlock()
				loadFailed = b.failLoad
			}
			b.mu.Lock()
			b.files[m.Request.String()] = nil
			b.mu.Unlock()
			reply = vhostuser.DeviceStateReply{NoFD: true}.Bytes()
		case vhostuser.CheckDeviceState:
			v := uint64(0)
			if loadFailed {
				v = 1
			}
			reply = vhostuser.U64(v).Bytes()
		}
		b.mu.Lock()
		acked := b.acked
		b.mu.Unlock()
		if reply == nil && m.NeedsReply() && acked&vhostuser.ProtoReplyAck != 0 {
			reply = vhostuser.U64(0).Bytes()
		}
		if reply != nil {
			r := &vhostuser.Message{Header: vhostuser.Header{Request: m.Request, Flags: vhostuser.FlagVersion | vhostuser.FlagReply}, Payload: reply}
			if err := b.conn.WriteMessage(r); err != nil {
				return
			}
		}
	}
}

// fdOf is f's descriptor, read without changing its blocking mode.
func fdOf(t *testing.T, f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Errorf("fd of %s: %v", f.Name(), err)
		return -1
	}
	fd := -1
	_ = rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// describe is a request as the fake's log shows it: its name and its
// ring index and value, or its u64; "log-all" marks SET_FEATURES with
// VHOST_F_LOG_ALL.
func describe(m *vhostuser.Message) string {
	s := m.Request.String()
	switch m.Request {
	case vhostuser.SetVringNum, vhostuser.SetVringBase, vhostuser.SetVringEnable:
		v, _ := vhostuser.ParseVringState(m.Payload)
		return fmt.Sprintf("%s %d %d", s, v.Index, v.Num)
	case vhostuser.GetVringBase:
		v, _ := vhostuser.ParseVringState(m.Payload)
		return fmt.Sprintf("%s %d", s, v.Index)
	case vhostuser.SetVringAddr:
		v, _ := vhostuser.ParseVringAddr(m.Payload)
		return fmt.Sprintf("%s %d", s, v.Index)
	case vhostuser.SetVringKick, vhostuser.SetVringCall, vhostuser.SetVringErr:
		v, _ := vhostuser.ParseVringFD(m.Payload)
		return fmt.Sprintf("%s %d", s, v.Index)
	case vhostuser.SetFeatures:
		if v, _ := vhostuser.ParseU64(m.Payload); uint64(v)&vhostuser.FeatureLogAll != 0 {
			return s + " log-all"
		}
	case vhostuser.SetDeviceStateFD:
		d, _ := vhostuser.ParseDeviceStateFD(m.Payload)
		return map[uint32]string{vhostuser.DirectionSave: s + " save", vhostuser.DirectionLoad: s + " load"}[d.Direction]
	}
	return s
}
