package front

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// Store is systemd's file descriptor store, as fdstore.Notifier sends to
// it: Config.Journal keeps the session there while it runs.
type Store interface {
	Store(name string, files ...*os.File) (bool, error)
	Remove(name string) (bool, error)
}

// The names of the crash record's descriptors in systemd's store. They all
// start with CrashPrefix, unlike a restart's checkpoint (CheckpointPrefix).
const (
	CrashPrefix  = "crash-"
	nameCrashVM  = CrashPrefix + "vm"
	nameCrashRec = CrashPrefix + "rec-" // two slots: crash-rec-0, crash-rec-1
	nameCrashFD  = CrashPrefix + "fd-"
)

// IsCrashName says whether a stored descriptor's name is one of a crash
// record's.
func IsCrashName(name string) bool { return strings.HasPrefix(name, CrashPrefix) }

// The layout of a slot: magic, generation (u64), body length (u32), CRC-32
// (IEEE) of the body (u32), then the body (JSON of crashData).
const (
	crashMagic     = "VFSCRSH1"
	crashHeaderLen = 8 + 8 + 4 + 4
)

// crashData is a crash record's body: the setup as a checkpoint records
// it (without state), the VM's requests awaiting a reply, and the store
// name of each descriptor it refers to by index.
type crashData struct {
	Setup *checkpointData `json:"setup"`
	Names []string        `json:"names"`
	// NextFD is the next number for a descriptor's name.
	NextFD uint64 `json:"next_fd"`
}

// journal keeps the running session's crash record in systemd's store, so
// that a shim killed with kill -9 leaves the session behind for the next
// one (docs/live-restart.md, "A shim crash"): the VM's connection, stored
// before the first request is read; the setup's descriptors, each under
// its own name, stored once; and the record in two memfd slots rewritten
// in turn (a generation number and a CRC, so that a write torn by the
// kill leaves the other slot good). A descriptor the setup no longer
// holds, and that neither slot refers to, is removed from the store.
// Owned by Run's loop.
type journal struct {
	st     Store
	slots  [2]*os.File
	names  [2][]string // the names each slot's record refers to
	gen    uint64      // of the last record written
	next   uint64      // next descriptor number
	byFile map[syscall.Conn]string
	stored map[string]bool // every crash-fd-* name in the store
	// files holds a dup of each stored descriptor, by name: systemd keeps
	// one copy of an open file description (a second FDSTORE=1 of it,
	// under any name, is dropped), and QEMU sends the same eventfd again
	// and again, so a descriptor new to the setup may be one already
	// stored, found by sameFile.
	files map[string]*held
	vm    bool   // the VM's connection is stored
	last  []byte // the last body written
	err   error  // the first failure; the journal then stops
}

func newJournal(st Store) *journal {
	return &journal{st: st, byFile: map[syscall.Conn]string{}, stored: map[string]bool{}, files: map[string]*held{}}
}

// kcmpFile is KCMP_FILE of kcmp(2).
const kcmpFile = 0

// sameFile tells whether a and b are one open file description, as
// systemd's store compares them (kcmp(2), KCMP_FILE).
func sameFile(a, b syscall.Conn) (bool, error) {
	var same bool
	err := withFD(a, func(fa int) error {
		return withFD(b, func(fb int) error {
			var sa, sb unix.Stat_t
			if err := unix.Fstat(fa, &sa); err != nil {
				return err
			}
			if err := unix.Fstat(fb, &sb); err != nil {
				return err
			}
			if sa.Dev != sb.Dev || sa.Ino != sb.Ino {
				return nil
			}
			pid := uintptr(os.Getpid())
			r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(fa), uintptr(fb), 0)
			if errno != 0 {
				return fmt.Errorf("kcmp: %w", errno)
			}
			same = r == 0
			return nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("compare descriptors: %w", err)
	}
	return same, nil
}

// withFD runs fn with c's descriptor.
func withFD(c syscall.Conn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

// nameOf finds the name f is stored under: its own, or that of a stored
// descriptor of the same open file description; "" when none.
func (j *journal) nameOf(f syscall.Conn) (string, error) {
	if name, ok := j.byFile[f]; ok {
		return name, nil
	}
	for name, g := range j.files {
		same, err := sameFile(f, g)
		if err != nil {
			return "", err
		}
		if same {
			j.byFile[f] = name
			return name, nil
		}
	}
	return "", nil
}

// ErrNoStore is the journal's error when the shim does not run under
// systemd: there is no store to keep the session in.
var ErrNoStore = errors.New("no systemd file descriptor store (NOTIFY_SOCKET is not set)")

// store sends f under name, failing when not run by systemd.
func (j *journal) store(name string, f *os.File) error {
	ok, err := j.st.Store(name, f)
	if err == nil && !ok {
		err = ErrNoStore
	}
	if err != nil {
		return fmt.Errorf("keep the session in systemd's fd store (%s): %w", name, err)
	}
	return nil
}

// storeConn is store for a descriptor the front holds bare (held): it
// goes as a short-lived *os.File.
func (j *journal) storeConn(name string, c syscall.Conn) error {
	if f, ok := c.(*os.File); ok {
		return j.store(name, f)
	}
	f, err := dupOf(c, name)
	if err != nil {
		return fmt.Errorf("keep the session in systemd's fd store (%s): %w", name, err)
	}
	defer f.Close()
	return j.store(name, f)
}

// start stores the VM's connection and the two slots, unless adopted.
func (j *journal) start(vm *os.File) error {
	if j.err != nil {
		return j.err
	}
	if !j.vm {
		if err := j.store(nameCrashVM, vm); err != nil {
			j.err = err
			return err
		}
		j.vm = true
	}
	for i := range j.slots {
		if j.slots[i] != nil {
			continue
		}
		fd, err := unix.MemfdCreate("virtiofsd-shim crash record", unix.MFD_CLOEXEC)
		if err != nil {
			j.err = fmt.Errorf("make a memfd for the crash record: %w", err)
			return j.err
		}
		j.slots[i] = os.NewFile(uintptr(fd), nameCrashRec+strconv.Itoa(i))
		if err := j.store(nameCrashRec+strconv.Itoa(i), j.slots[i]); err != nil {
			j.err = err
			return err
		}
	}
	return nil
}

// write records the setup and the requests awaiting a reply (extra: one
// about to be passed on), when they changed since the last write.
func (j *journal) write(s *setup, outstanding []*vhostuser.Message, extra *vhostuser.Message) error {
	if j.err != nil {
		return j.err
	}
	var names []string
	index := map[string]int{}
	add := func(f syscall.Conn) (int, error) {
		if f == nil {
			return -1, nil
		}
		name, err := j.nameOf(f)
		if err != nil {
			return -1, err
		}
		if name == "" {
			d, err := hold(f, descName(f))
			if err != nil {
				return -1, err
			}
			name = nameCrashFD + strconv.FormatUint(j.next, 10)
			if err := j.storeConn(name, f); err != nil {
				d.Close()
				return -1, err
			}
			j.next++
			j.byFile[f] = name
			j.stored[name] = true
			j.files[name] = d
		}
		if i, ok := index[name]; ok {
			return i, nil
		}
		names = append(names, name)
		index[name] = len(names) - 1
		return len(names) - 1, nil
	}
	d, err := recordSetup(s, add)
	if err != nil {
		j.err = err
		return err
	}
	for _, m := range append(outstanding[:len(outstanding):len(outstanding)], extra) {
		if m != nil {
			d.Pending = append(d.Pending, checkpointMessage{Request: uint32(m.Request), Flags: m.Flags, Payload: m.Payload})
		}
	}
	d.Files = len(names)
	body, err := json.Marshal(crashData{Setup: d, Names: names, NextFD: j.next})
	if err != nil {
		j.err = fmt.Errorf("encode the crash record: %w", err)
		return j.err
	}
	if bytes.Equal(body, j.last) {
		return nil
	}
	gen := j.gen + 1
	slot := int(gen % 2)
	hdr := make([]byte, crashHeaderLen)
	copy(hdr, crashMagic)
	binary.LittleEndian.PutUint64(hdr[8:], gen)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(len(body)))
	binary.LittleEndian.PutUint32(hdr[20:], crc32.ChecksumIEEE(body))
	// The body first: a kill between the two writes leaves a header whose
	// CRC does not match, and the other slot is read.
	if _, err := j.slots[slot].WriteAt(body, crashHeaderLen); err != nil {
		j.err = fmt.Errorf("write the crash record: %w", err)
		return j.err
	}
	if _, err := j.slots[slot].WriteAt(hdr, 0); err != nil {
		j.err = fmt.Errorf("write the crash record: %w", err)
		return j.err
	}
	j.gen, j.last, j.names[slot] = gen, body, names
	j.prune()
	return nil
}

// prune removes from the store the descriptors neither slot refers to.
func (j *journal) prune() {
	keep := map[string]bool{}
	for _, ns := range j.names {
		for _, n := range ns {
			keep[n] = true
		}
	}
	for name := range j.stored {
		if keep[name] {
			continue
		}
		if _, err := j.st.Remove(name); err != nil {
			j.err = fmt.Errorf("drop %s from systemd's fd store: %w", name, err)
			return
		}
		delete(j.stored, name)
		if d := j.files[name]; d != nil {
			d.Close()
			delete(j.files, name)
		}
	}
	for f, name := range j.byFile {
		if !j.stored[name] {
			delete(j.byFile, f)
		}
	}
}

// drop removes the whole record from the store: the session ended, or a
// restart's checkpoint holds it now. With the VM's connection gone from
// the store, the VM sees the end once the shim closes its own copy.
func (j *journal) drop() {
	names := []string{nameCrashVM, nameCrashRec + "0", nameCrashRec + "1"}
	for name := range j.stored {
		names = append(names, name)
	}
	for _, name := range names {
		_, _ = j.st.Remove(name)
	}
	for _, f := range j.slots {
		if f != nil {
			f.Close()
		}
	}
	for _, f := range j.files {
		f.Close()
	}
	*j = journal{st: j.st, err: errors.New("the crash record was dropped")}
}

// CrashRecord is a session a killed shim left in systemd's store: the VM's
// connection, the setup's descriptors and the setup, without virtiofsd's
// state (a killed shim saved none). ResumeAfterCrash takes it.
type CrashRecord struct {
	cp     Checkpoint // VM, Files and data; no Setup or State
	slots  [2]*os.File
	names  [2][]string
	gen    uint64
	next   uint64
	stored map[string]bool
	byName map[string]*os.File // every crash-fd-* descriptor passed
	extra  []*os.File          // descriptors no record refers to
}

// Close closes every descriptor of the record.
func (r *CrashRecord) Close() {
	r.cp.Close()
	for _, f := range append(r.slots[:], r.extra...) {
		if f != nil {
			f.Close()
		}
	}
	r.slots, r.extra = [2]*os.File{}, nil
}

// Drop removes the record from st, systemd's store, and closes it: it
// cannot be resumed (without the front), or a restart's checkpoint is
// newer. The VM then sees its connection end.
func (r *CrashRecord) Drop(st Store) {
	names := []string{nameCrashVM, nameCrashRec + "0", nameCrashRec + "1"}
	for name := range r.stored {
		names = append(names, name)
	}
	for _, name := range names {
		_, _ = st.Remove(name)
	}
	r.Close()
}

// Requests counts the VM's requests awaiting a reply in the record.
func (r *CrashRecord) Requests() int { return len(r.cp.data.Pending) }

// readSlot parses one slot: its generation and body, or an error.
func readSlot(f *os.File) (uint64, *crashData, error) {
	b, err := readAll(f, "crash record", maxSetupSize)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < crashHeaderLen || string(b[:8]) != crashMagic {
		return 0, nil, errors.New("the crash record has no header (never written)")
	}
	gen := binary.LittleEndian.Uint64(b[8:])
	n := int(binary.LittleEndian.Uint32(b[16:]))
	if n > len(b)-crashHeaderLen {
		return 0, nil, fmt.Errorf("the crash record of generation %d is cut short", gen)
	}
	body := b[crashHeaderLen : crashHeaderLen+n]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(b[20:]) {
		return 0, nil, fmt.Errorf("the crash record of generation %d is torn (its CRC does not match)", gen)
	}
	d := &crashData{}
	if err := json.Unmarshal(body, d); err != nil {
		return 0, nil, fmt.Errorf("parse the crash record: %w", err)
	}
	if d.Setup == nil || d.Setup.Version != CheckpointVersion {
		return 0, nil, fmt.Errorf("the crash record is not of version %d", CheckpointVersion)
	}
	return gen, d, nil
}

// LoadCrashRecord finds a crash record among the descriptors systemd passed
// back from its store (fdstore.ByName's map). It returns (nil, nil) when
// there is none. It takes every descriptor with a crash record's name:
// when no slot holds a good record or a descriptor is missing, it closes
// them all and says why (the caller drops the store's copies).
func LoadCrashRecord(stored map[string][]*os.File) (*CrashRecord, error) {
	r := &CrashRecord{stored: map[string]bool{}, byName: map[string]*os.File{}}
	files := map[string]*os.File{}
	for name, fs := range stored {
		if !IsCrashName(name) {
			continue
		}
		files[name] = fs[0]
		r.extra = append(r.extra, fs[1:]...)
	}
	if len(files) == 0 {
		return nil, nil
	}
	fail := func(err error) (*CrashRecord, error) {
		for _, f := range files {
			f.Close()
		}
		r.Close()
		return nil, fmt.Errorf("resume the session the killed shim left in systemd's fd store: %w; the VM's share is disconnected, restart the VM to get it back", err)
	}
	r.cp.VM = files[nameCrashVM]
	if r.cp.VM == nil {
		return fail(errors.New("the VM's connection (" + nameCrashVM + ") is missing"))
	}
	var best *crashData
	var errs []error
	for i := range r.slots {
		r.slots[i] = files[nameCrashRec+strconv.Itoa(i)]
		if r.slots[i] == nil {
			continue
		}
		gen, d, err := readSlot(r.slots[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		r.names[i] = d.Names
		if best == nil || gen > r.gen {
			best, r.gen = d, gen
		}
	}
	if best == nil {
		return fail(fmt.Errorf("no good crash record: %w", errors.Join(errs...)))
	}
	for _, name := range best.Names {
		f := files[name]
		if f == nil {
			return fail(fmt.Errorf("descriptor %s of the crash record is missing", name))
		}
		r.cp.Files = append(r.cp.Files, f)
	}
	for name, f := range files {
		if strings.HasPrefix(name, nameCrashFD) {
			r.stored[name] = true
			r.byName[name] = f
			if !contains(best.Names, name) {
				r.extra = append(r.extra, f)
			}
		}
	}
	if best.Setup.Files != len(best.Names) {
		return fail(fmt.Errorf("the crash record refers to %d descriptors but names %d", best.Setup.Files, len(best.Names)))
	}
	r.next = best.NextFD
	r.cp.data = best.Setup
	return r, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// adopt makes the journal go on with the record's slots and names: the
// descriptors stay stored under their names, which the next write finds
// again for the resumed setup's (dups of them, sameFile).
func (j *journal) adopt(r *CrashRecord) error {
	j.slots, r.slots = r.slots, [2]*os.File{}
	j.names, j.gen, j.next, j.vm = r.names, r.gen, r.next, true
	for name := range r.stored {
		j.stored[name] = true
		d, err := hold(r.byName[name], name)
		if err != nil {
			return fmt.Errorf("keep the crash record: %w", err)
		}
		j.files[name] = d
	}
	return nil
}

// ResumeAfterCrash continues the session a killed shim left in systemd's
// store on a fresh virtiofsd, whose connection backend is, as a recovery
// from a virtiofsd crash does: the recorded setup replayed, each started
// ring restarted at its used index read from guest memory, and the VM's
// requests awaiting a reply answered (Recovery.Answered). The session is
// degraded from then on: the fresh virtiofsd has no FUSE state, so the
// guest's requests fail with EBADF until it mounts the share again.
// cfg must have Respawn (the same checks as a recovery apply); with
// cfg.Journal the record goes on being kept.
//
// ResumeAfterCrash owns r and backend from now on; on failure it closes
// both, and with them the VM's connection (the caller drops the store's
// copies).
func ResumeAfterCrash(ctx context.Context, r *CrashRecord, backend *net.UnixConn, cfg Config) (*Front, Recovery, error) {
	defer r.Close()
	start := cfgNow(cfg)()
	fail := func(f *Front, err error) (*Front, Recovery, error) {
		if f != nil {
			if f.journal != nil {
				f.journal.drop()
			}
			f.close()
		} else {
			backend.Close()
		}
		return nil, Recovery{}, fmt.Errorf("resume the session the killed shim left: %w; the VM's share is disconnected, restart the VM to get it back", err)
	}
	vmConn, err := net.FileConn(r.cp.VM)
	if err != nil {
		return fail(nil, fmt.Errorf("the VM's connection (%s): %w", nameCrashVM, err))
	}
	vm, ok := vmConn.(*net.UnixConn)
	if !ok {
		vmConn.Close()
		return fail(nil, fmt.Errorf("the VM's connection (%s) is not a unix socket", nameCrashVM))
	}
	f := New(vm, backend, cfg)
	s, err := r.cp.restore()
	if err != nil {
		return fail(f, err)
	}
	f.setup.close()
	f.setup = s
	for _, p := range r.cp.data.Pending {
		f.outstanding = append(f.outstanding, &vhostuser.Message{
			Header:  vhostuser.Header{Request: vhostuser.Request(p.Request), Flags: p.Flags, Size: uint32(len(p.Payload))},
			Payload: p.Payload,
		})
	}
	if f.journal != nil {
		if err := f.journal.adopt(r); err != nil {
			return fail(f, err)
		}
	}
	if why := f.recoveryRefusal(); why != "" {
		return fail(f, errors.New(why))
	}
	bases, err := f.usedIndexes()
	if err != nil {
		return fail(f, err)
	}
	rctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	if err := f.prepare(rctx, f.be, false); err != nil {
		return fail(f, fmt.Errorf("%s: %w", StepPrepare, err))
	}
	if err := f.startRings(rctx, f.be, bases, true); err != nil {
		return fail(f, fmt.Errorf("%s: %w", StepRings, err))
	}
	n, err := f.answerOutstanding(rctx)
	if err != nil {
		return fail(f, err)
	}
	rec := Recovery{Cause: errors.New("the shim was killed"), Bases: bases, Answered: n, Took: cfgNow(cfg)().Sub(start)}
	f.recoveries, f.lastRecovery = 1, rec
	return f, rec, nil
}
