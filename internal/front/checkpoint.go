package front

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// CheckpointVersion is the layout of the checkpoints this shim writes; it
// resumes only from the same version.
const CheckpointVersion = 1

// The names a checkpoint's descriptors go by in systemd's file descriptor
// store (FDNAME=). They all start with CheckpointPrefix.
const (
	CheckpointPrefix = "front-"
	nameVM           = CheckpointPrefix + "vm"
	nameSetup        = CheckpointPrefix + "setup"
	nameState        = CheckpointPrefix + "state"
	nameFile         = CheckpointPrefix + "fd-"
)

// maxSetupSize bounds the setup record read back; it holds a few rings and
// at most a few hundred memory regions.
const maxSetupSize = 4 << 20

// maxStateSize bounds the virtiofsd state read back: about 15 bytes per
// inode, so far above what 100,000 inodes take.
const maxStateSize = 1 << 30

// Checkpoint is a session frozen so that a new shim can resume it on a
// fresh virtiofsd: the VM's connection, the recorded setup as data and its
// descriptors, and virtiofsd's saved state. It owns its files: Close closes
// them, and Resume takes them over.
type Checkpoint struct {
	VM    *os.File   // the VM's end of the vhost-user connection
	Setup *os.File   // a memfd holding the recorded setup (JSON, versioned)
	State *os.File   // a memfd holding virtiofsd's saved state
	Files []*os.File // the setup's descriptors, referenced by index from Setup

	data *checkpointData // Setup, parsed
}

// NamedFile is a descriptor with the name it is stored under.
type NamedFile struct {
	Name string
	File *os.File
}

// Named lists the checkpoint's descriptors with unique names, in the order
// to store them: the setup record last, so that a store that has it has
// been sent everything before it.
func (c *Checkpoint) Named() []NamedFile {
	var out []NamedFile
	for i, f := range c.Files {
		out = append(out, NamedFile{nameFile + strconv.Itoa(i), f})
	}
	return append(out, NamedFile{nameVM, c.VM}, NamedFile{nameState, c.State}, NamedFile{nameSetup, c.Setup})
}

// StateSize is the size of virtiofsd's saved state, in bytes.
func (c *Checkpoint) StateSize() int {
	if c.data == nil {
		return 0
	}
	return c.data.StateSize
}

// Close closes every descriptor of the checkpoint.
func (c *Checkpoint) Close() {
	for _, f := range append([]*os.File{c.VM, c.Setup, c.State}, c.Files...) {
		if f != nil {
			f.Close()
		}
	}
	c.VM, c.Setup, c.State, c.Files = nil, nil, nil, nil
}

// IsCheckpointName says whether a stored descriptor's name is one of a
// checkpoint's.
func IsCheckpointName(name string) bool { return strings.HasPrefix(name, CheckpointPrefix) }

// checkpointData is the setup record: what setup holds, with each
// descriptor replaced by its index in Checkpoint.Files (-1: none).
type checkpointData struct {
	Version             int                 `json:"version"`
	Features            uint64              `json:"features"`
	HasFeatures         bool                `json:"has_features"`
	ProtocolFeatures    uint64              `json:"protocol_features"`
	HasProtocolFeatures bool                `json:"has_protocol_features"`
	Owner               bool                `json:"owner"`
	Regions             []checkpointRegion  `json:"regions"`
	Rings               []checkpointRing    `json:"rings"`
	BackendReq          int                 `json:"backend_req"`
	LogBase             []byte              `json:"log_base,omitempty"`
	LogFile             int                 `json:"log_file"`
	Unswappable         string              `json:"unswappable,omitempty"`
	Unknown             int                 `json:"unknown_requests"`
	Swaps               int                 `json:"swaps"`
	Stopped             map[uint32]uint32   `json:"stopped"` // where each stopped ring stopped
	Pending             []checkpointMessage `json:"pending,omitempty"`
	StateSize           int                 `json:"state_size"`
	Files               int                 `json:"files"` // len(Checkpoint.Files)

	// BackendProtocolFeatures are those virtiofsd got; absent (0) in a
	// checkpoint of a shim that sent it the VM's own.
	BackendProtocolFeatures uint64 `json:"backend_protocol_features,omitempty"`
	// OfferedProtocol is virtiofsd's GET_PROTOCOL_FEATURES answer, as the
	// VM got it.
	OfferedProtocol    uint64 `json:"offered_protocol_features,omitempty"`
	HasOfferedProtocol bool   `json:"has_offered_protocol_features,omitempty"`
}

type checkpointRegion struct {
	vhostuser.MemRegion
	File int `json:"file"`
}

type checkpointRing struct {
	Index   uint32              `json:"index"`
	Num     uint32              `json:"num"`
	Base    uint32              `json:"base"`
	Addr    vhostuser.VringAddr `json:"addr"`
	HasNum  bool                `json:"has_num"`
	HasBase bool                `json:"has_base"`
	HasAddr bool                `json:"has_addr"`
	Kick    *checkpointEvent    `json:"kick,omitempty"`
	Call    *checkpointEvent    `json:"call,omitempty"`
	Err     *checkpointEvent    `json:"err,omitempty"`
	Started bool                `json:"started"`
	Enabled bool                `json:"enabled"`
}

type checkpointEvent struct {
	NoFD bool `json:"no_fd"`
	File int  `json:"file"`
}

// checkpointMessage is a request the VM sent after the rings stopped,
// which the new shim passes on first.
type checkpointMessage struct {
	Request uint32 `json:"request"`
	Flags   uint32 `json:"flags"`
	Payload []byte `json:"payload"`
	Files   []int  `json:"files"`
}

// checkpointWriter collects dups of the descriptors a checkpoint refers to.
type checkpointWriter struct{ files []*os.File }

func (w *checkpointWriter) add(f syscall.Conn) (int, error) {
	if f == nil {
		return -1, nil
	}
	d, err := dupOf(f, descName(f))
	if err != nil {
		return -1, err
	}
	w.files = append(w.files, d)
	return len(w.files) - 1, nil
}

// record turns the setup into data, with dups of its descriptors.
func (w *checkpointWriter) record(s *setup) (*checkpointData, error) { return recordSetup(s, w.add) }

// fileConn is f for an add: nil (not a nil *os.File) when there is none.
func fileConn(f *os.File) syscall.Conn {
	if f == nil {
		return nil
	}
	return f
}

// descName is what a descriptor is, for errors and names.
func descName(c syscall.Conn) string {
	if n, ok := c.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "descriptor"
}

// recordSetup turns the setup into data, each descriptor replaced by the
// index add gives it (-1: none).
func recordSetup(s *setup, add func(syscall.Conn) (int, error)) (*checkpointData, error) {
	event := func(e *eventFD) (*checkpointEvent, error) {
		if e == nil {
			return nil, nil
		}
		i, err := add(e.conn())
		return &checkpointEvent{NoFD: e.noFD, File: i}, err
	}
	d := &checkpointData{
		Version: CheckpointVersion, Features: s.features, HasFeatures: s.hasFeatures,
		ProtocolFeatures: s.protocolFeatures, HasProtocolFeatures: s.hasProtocolFeatures,
		BackendProtocolFeatures: s.backendProtocol, OfferedProtocol: s.offeredProtocol, HasOfferedProtocol: s.hasOffered,
		Owner: s.owner, LogBase: s.logBase, Unswappable: s.unswappable, Unknown: s.unknown,
	}
	var err error
	for _, r := range s.regions {
		i, err := add(r.file)
		if err != nil {
			return nil, err
		}
		d.Regions = append(d.Regions, checkpointRegion{MemRegion: r.MemRegion, File: i})
	}
	for _, i := range s.ringIndexes() {
		r := s.rings[i]
		cr := checkpointRing{
			Index: i, Num: r.num, Base: r.base, Addr: r.addr, HasNum: r.hasNum, HasBase: r.hasBase,
			HasAddr: r.hasAddr, Started: r.started, Enabled: r.enabled,
		}
		if cr.Kick, err = event(r.kick); err != nil {
			return nil, err
		}
		if cr.Call, err = event(r.call); err != nil {
			return nil, err
		}
		if cr.Err, err = event(r.err); err != nil {
			return nil, err
		}
		d.Rings = append(d.Rings, cr)
	}
	if d.BackendReq, err = add(fileConn(s.backendReq)); err != nil {
		return nil, err
	}
	if d.LogFile, err = add(fileConn(s.logFile)); err != nil {
		return nil, err
	}
	return d, nil
}

func (w *checkpointWriter) close() {
	for _, f := range w.files {
		f.Close()
	}
	w.files = nil
}

// memfd returns a sealed memfd holding b, for systemd's store: it shares
// the store's life, where a file in /run would not.
func memfd(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("make a memfd for the %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the %s into a memfd: %w", name, err)
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the %s's memfd: %w", name, err)
	}
	return f, nil
}

// readAll reads f from offset 0, at most limit bytes, without moving the
// offset it shares with systemd's copy.
func readAll(f *os.File, what string, limit int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read the %s: %w", what, err)
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("the %s is not a memfd of at most %d bytes (%s, %d bytes)", what, limit, st.Mode().Type(), st.Size())
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return nil, fmt.Errorf("read the %s: %w", what, err)
	}
	return b, nil
}

// LoadCheckpoint finds a checkpoint among the descriptors systemd passed
// back from its store (fdstore.ByName's map). It returns (nil, nil) when
// there is none. It takes every descriptor with a checkpoint's name: when
// the checkpoint is broken, partial, or of another version, it closes them
// all (the VM then sees its connection end, once the store lets go of its
// copies too) and says why.
func LoadCheckpoint(stored map[string][]*os.File) (*Checkpoint, error) {
	c := &Checkpoint{}
	files := map[string]*os.File{}
	var extra []*os.File
	for name, fs := range stored {
		if !IsCheckpointName(name) {
			continue
		}
		files[name] = fs[0]
		extra = append(extra, fs[1:]...)
	}
	if len(files) == 0 {
		return nil, nil
	}
	fail := func(err error) (*Checkpoint, error) {
		for _, f := range files {
			f.Close()
		}
		for _, f := range extra {
			f.Close()
		}
		return nil, fmt.Errorf("resume the session from the checkpoint in systemd's fd store: %w; the VM's share is disconnected, restart the VM to get it back", err)
	}
	if len(extra) > 0 {
		return fail(errors.New("a name is stored more than once"))
	}
	c.VM, c.Setup, c.State = files[nameVM], files[nameSetup], files[nameState]
	for what, f := range map[string]*os.File{"setup record (" + nameSetup + ")": c.Setup, "VM's connection (" + nameVM + ")": c.VM, "state (" + nameState + ")": c.State} {
		if f == nil {
			return fail(fmt.Errorf("the %s is missing: the checkpoint is partial", what))
		}
	}
	b, err := readAll(c.Setup, "setup record", maxSetupSize)
	if err != nil {
		return fail(err)
	}
	d := &checkpointData{}
	if err := json.Unmarshal(b, d); err != nil {
		return fail(fmt.Errorf("parse the setup record: %w", err))
	}
	if d.Version != CheckpointVersion {
		return fail(fmt.Errorf("the checkpoint is of version %d, this shim reads version %d only", d.Version, CheckpointVersion))
	}
	if d.Files < 0 || d.Files+3 != len(files) {
		return fail(fmt.Errorf("the store holds %d of the checkpoint's %d descriptors: the checkpoint is partial (is FileDescriptorStoreMax= too small?)", len(files), d.Files+3))
	}
	for i := range d.Files {
		f := files[nameFile+strconv.Itoa(i)]
		if f == nil {
			return fail(fmt.Errorf("descriptor %s%d is missing: the checkpoint is partial", nameFile, i))
		}
		c.Files = append(c.Files, f)
	}
	c.data = d
	return c, nil
}

// file returns the checkpoint's i-th descriptor, or an error naming what
// refers to it.
func (c *Checkpoint) file(i int, what string) (*os.File, error) {
	if i < 0 || i >= len(c.Files) {
		return nil, fmt.Errorf("the %s refers to descriptor %d of %d", what, i, len(c.Files))
	}
	return c.Files[i], nil
}

// restore rebuilds the setup from the checkpoint, with dups of its
// descriptors (the checkpoint keeps its own).
func (c *Checkpoint) restore() (*setup, error) {
	d := c.data
	s := newSetup()
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	s.features, s.hasFeatures = d.Features, d.HasFeatures
	s.protocolFeatures, s.hasProtocolFeatures = d.ProtocolFeatures, d.HasProtocolFeatures
	s.backendProtocol = d.BackendProtocolFeatures
	if s.backendProtocol == 0 {
		s.backendProtocol = d.ProtocolFeatures
	}
	s.offeredProtocol, s.hasOffered = d.OfferedProtocol, d.HasOfferedProtocol
	s.owner, s.logBase, s.unswappable, s.unknown = d.Owner, d.LogBase, d.Unswappable, d.Unknown
	dupOf := func(i int, what string) (*os.File, error) {
		if i == -1 {
			return nil, nil
		}
		f, err := c.file(i, what)
		if err != nil {
			return nil, err
		}
		return dup(f)
	}
	var err error
	for n, r := range d.Regions {
		f, err := dupOf(r.File, fmt.Sprintf("memory region %d", n))
		if err != nil {
			return nil, err
		}
		if f == nil {
			return nil, fmt.Errorf("memory region %d has no descriptor", n)
		}
		s.regions = append(s.regions, region{MemRegion: r.MemRegion, file: f})
	}
	event := func(e *checkpointEvent, what string) (*eventFD, error) {
		if e == nil {
			return nil, nil
		}
		ev := &eventFD{noFD: e.NoFD}
		if !e.NoFD {
			if e.File == -1 {
				return nil, fmt.Errorf("the %s has no descriptor", what)
			}
			f, err := c.file(e.File, what)
			if err != nil {
				return nil, err
			}
			if ev.fd, err = hold(f, what); err != nil {
				return nil, err
			}
		}
		return ev, nil
	}
	for _, cr := range d.Rings {
		r := s.ring(cr.Index)
		r.num, r.base, r.addr = cr.Num, cr.Base, cr.Addr
		r.hasNum, r.hasBase, r.hasAddr = cr.HasNum, cr.HasBase, cr.HasAddr
		r.started, r.enabled = cr.Started, cr.Enabled
		if r.kick, err = event(cr.Kick, fmt.Sprintf("ring %d's kick", cr.Index)); err != nil {
			return nil, err
		}
		if r.call, err = event(cr.Call, fmt.Sprintf("ring %d's call", cr.Index)); err != nil {
			return nil, err
		}
		if r.err, err = event(cr.Err, fmt.Sprintf("ring %d's err", cr.Index)); err != nil {
			return nil, err
		}
	}
	if s.backendReq, err = dupOf(d.BackendReq, "back-end channel"); err != nil {
		return nil, err
	}
	if s.logFile, err = dupOf(d.LogFile, "log"); err != nil {
		return nil, err
	}
	for i := range d.Stopped {
		if _, ok := s.rings[i]; !ok {
			return nil, fmt.Errorf("ring %d stopped but has no recorded setup", i)
		}
	}
	ok = true
	return s, nil
}

// pending rebuilds the VM's requests held at the checkpoint, with dups of
// their descriptors.
func (c *Checkpoint) pending() ([]*vhostuser.Message, error) {
	var out []*vhostuser.Message
	for n, p := range c.data.Pending {
		m := &vhostuser.Message{
			Header:  vhostuser.Header{Request: vhostuser.Request(p.Request), Flags: p.Flags, Size: uint32(len(p.Payload))},
			Payload: p.Payload,
		}
		for _, i := range p.Files {
			f, err := c.file(i, fmt.Sprintf("held request %d", n))
			if err == nil {
				f, err = dup(f)
			}
			if err != nil {
				m.Close()
				for _, m := range out {
					m.Close()
				}
				return nil, err
			}
			m.Files = append(m.Files, f)
		}
		out = append(out, m)
	}
	return out, nil
}

// ResumeTimeout bounds Resume's exchanges with the new virtiofsd when the
// caller's context has no deadline.
const ResumeTimeout = 30 * time.Second

// Resume continues a checkpointed session on a fresh virtiofsd, whose
// connection backend is: it gives it the recorded setup (features,
// protocol features, owner, back-end channel, memory), loads the saved
// state, starts the rings where they stopped (kick fds set while disabled,
// then enable, then a kick), and passes on the VM's requests held at the
// checkpoint. The returned Front relays the session from there once Run
// runs.
//
// Resume owns cp and backend from now on. On failure it closes both, and
// with them the VM's connection (the caller must also drop the store's
// copies, or the VM never sees the end).
func Resume(ctx context.Context, cp *Checkpoint, backend *net.UnixConn, cfg Config) (*Front, error) {
	defer cp.Close()
	if cp.data == nil {
		backend.Close()
		return nil, errors.New("resume the session: the checkpoint was not loaded with LoadCheckpoint")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ResumeTimeout)
		defer cancel()
	}
	fail := func(f *Front, err error) (*Front, error) {
		f.close()
		return nil, fmt.Errorf("resume the session on the new virtiofsd: %w; the VM's share is disconnected, restart the VM to get it back", err)
	}
	vmConn, err := net.FileConn(cp.VM)
	if err != nil {
		backend.Close()
		return nil, fmt.Errorf("resume the session: the VM's connection (%s): %w", nameVM, err)
	}
	vm, ok := vmConn.(*net.UnixConn)
	if !ok {
		vmConn.Close()
		backend.Close()
		return nil, fmt.Errorf("resume the session: the VM's connection (%s) is not a unix socket", nameVM)
	}
	f := New(vm, backend, cfg)
	s, err := cp.restore()
	if err != nil {
		return fail(f, err)
	}
	f.setup.close()
	f.setup = s
	f.count = cp.data.Swaps + 1 // the restart is a handover too
	state, err := readAll(cp.State, "state", maxStateSize)
	if err != nil {
		return fail(f, err)
	}
	if len(state) != cp.data.StateSize {
		return fail(f, fmt.Errorf("the state has %d bytes, the setup record says %d", len(state), cp.data.StateSize))
	}
	held, err := cp.pending()
	if err != nil {
		return fail(f, err)
	}
	for _, m := range held {
		defer m.Close()
	}
	if err := f.prepare(ctx, f.be, true); err != nil {
		return fail(f, fmt.Errorf("%s: %w", StepPrepare, err))
	}
	if err := loadState(ctx, f.be, state); err != nil {
		return fail(f, fmt.Errorf("%s: %w", StepLoad, err))
	}
	if err := f.startRings(ctx, f.be, cp.data.Stopped, true); err != nil {
		return fail(f, fmt.Errorf("%s: %w", StepRings, err))
	}
	for _, m := range held {
		if err := f.relayRequest(m); err != nil {
			return fail(f, err)
		}
	}
	return f, nil
}

// ErrSavedForRestart is what Run returns once SaveForRestart has taken
// the session: the VM is still connected, through the checkpoint.
var ErrSavedForRestart = errors.New("the session was saved for a restart")

// SaveForRestart freezes the session for a new shim: it waits until the
// VM's outstanding requests are answered, stops the rings (as a swap does),
// saves virtiofsd's state, and returns the checkpoint, which holds the VM's
// connection. Run then returns ErrSavedForRestart, closing the old
// virtiofsd's connection (it exits by itself) but not the VM's.
//
// If the session cannot be saved (see Status().Reason), or virtiofsd fails
// to save its state, it returns the error and the session goes on with
// the old virtiofsd, its rings given back. SaveForRestart needs Run to be
// running.
func (f *Front) SaveForRestart(ctx context.Context) (*Checkpoint, error) {
	req := swapRequest{ctx: ctx, op: opSaveForRestart, done: make(chan swapResponse, 1)}
	select {
	case f.swaps <- req:
	case <-f.ended:
		return nil, errors.New("save the session for a restart: the session has ended")
	case <-ctx.Done():
		return nil, fmt.Errorf("save the session for a restart: %w", ctx.Err())
	}
	r := <-req.done
	return r.cp, r.err
}

// saveForRestart runs in Run's loop with nothing outstanding and the VM
// held. ended says whether Run must return: the checkpoint was taken, or
// the VM's reader was stopped and cannot be resumed.
func (f *Front) saveForRestart(ctx context.Context) (cp *Checkpoint, ended bool, err error) {
	s := f.setup
	if err := f.checkSwappable(); err != nil {
		return nil, false, err
	}
	_, stopped, state, err := f.freezeAndSave(ctx)
	if err != nil {
		return nil, false, err
	}
	w := &checkpointWriter{}
	c := &Checkpoint{}
	defer func() {
		if cp == nil {
			w.close()
			c.Close()
		}
	}()
	f.mu.Lock()
	d, err := w.record(s)
	d.Swaps = f.count
	f.mu.Unlock()
	if err == nil {
		c.State, err = memfd("virtiofsd state", state)
	}
	if err == nil {
		c.VM, err = f.vm.dupConn()
	}
	if err != nil {
		return nil, false, f.rollback(ctx, StepSave, err, stopped)
	}
	d.Stopped, d.StateSize = stopped, len(state)

	// From here the VM's reader is stopped: the session ends either way.
	held, err := f.vm.hold()
	defer func() {
		for _, m := range held {
			m.Close()
		}
	}()
	if err != nil {
		return nil, true, fmt.Errorf("save the session for a restart: stop reading the VM's requests: %w", err)
	}
	for _, m := range held {
		p := checkpointMessage{Request: uint32(m.Request), Flags: m.Flags, Payload: m.Payload}
		for _, file := range m.Files {
			i, err := w.add(file)
			if err != nil {
				return nil, true, fmt.Errorf("save the session for a restart: %w", err)
			}
			p.Files = append(p.Files, i)
		}
		d.Pending = append(d.Pending, p)
	}
	d.Files = len(w.files)
	b, err := json.Marshal(d)
	if err == nil {
		c.Setup, err = memfd("virtiofsd-shim setup", b)
	}
	if err != nil {
		return nil, true, fmt.Errorf("save the session for a restart: %w", err)
	}
	c.Files, w.files = w.files, nil
	c.data = d
	return c, true, nil
}
