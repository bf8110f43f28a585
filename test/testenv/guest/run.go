package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/syncbuf"
)

// Markers the init prints on the serial console, and the one scripts use.
const (
	markerStart  = "GUEST_SCRIPT_START"
	markerExit   = "GUEST_SCRIPT_EXIT="
	markerError  = "GUEST_ERROR"
	markerResult = "RESULT "
)

// DefaultTimeout bounds a Run whose Spec has no Timeout. A boot that mounts a
// share and powers off takes about 2 s under TCG.
const DefaultTimeout = 60 * time.Second

// KernelCmdline is the guest kernel's command line: the serial console is
// ttyS0, and a panic powers off at once (with -no-reboot, or libvirt's
// <on_reboot>destroy</on_reboot>).
const KernelCmdline = "console=ttyS0 quiet panic=-1"

// guestMemory is the guest's RAM, shared with the vhost-user backends through
// a memfd (vhost-user needs shared guest memory).
const guestMemory = "512M"

// maxSocketPath is the room in sockaddr_un.sun_path, NUL included.
const maxSocketPath = 108

// tagPattern accepts virtiofs tags that are also safe in QEMU options and
// guest paths; the kernel limits tags to 36 bytes.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,35}$`)

// Share is one virtiofs device of the guest.
type Share struct {
	Tag    string // mount tag; the script mounts it with mount -t virtiofs <tag> /mnt/<tag>
	Socket string // vhost-user socket of the virtiofsd that serves it; must exist
}

// Spec describes one boot.
type Spec struct {
	Shares []Share
	// Script is a busybox sh script, run as `sh /script` with stdin from
	// /dev/null and output on the serial console. Lines "RESULT key=value"
	// end up in Result.Values.
	Script string
	// Timeout bounds the boot from QEMU's start to its exit; 0 means
	// DefaultTimeout. QEMU is killed when it expires.
	Timeout time.Duration
	// Console, when set, gets a live copy of the serial console.
	Console io.Writer
	// QEMU is the qemu-system-x86_64 binary; empty means look it up in PATH.
	QEMU string
	// Command, when set, makes the QEMU command instead of
	// exec.CommandContext: to run it as another user or in another mount
	// namespace (a user's VM in a private systemd). The sockets are then
	// paths where QEMU runs, so Run does not check that they exist, and
	// WorkDir must be a folder that QEMU sees at the same path.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Files are more files for this run's initramfs, by path in the guest
	// (relative, such as "bin/guestload"; folders are made as needed), each
	// written executable (0755): a static program for the script to run.
	Files map[string][]byte
	// QMP, when set, is a unix socket path (on this host) where QEMU serves
	// its QMP monitor; Start connects to it (Machine.QMP).
	QMP string
	// Incoming, when set, is QEMU's -incoming argument: "defer" makes a
	// migration destination that waits for QMP migrate-incoming. The
	// destination of a migration gets the same Spec as its source (the
	// same devices, kernel and initramfs) and prints nothing on its console
	// before the migration: its Result is ParseSerial of the source's
	// console followed by its own.
	Incoming string
	// WorkDir is where the run's initramfs is written; "" is os.TempDir().
	// With Command, the run's folder is made readable by all, so that a
	// QEMU of another user can read it.
	WorkDir string
}

// Result is what one boot produced.
type Result struct {
	Serial     string            // the serial console output, as QEMU wrote it
	ExitStatus int               // the script's exit status
	Values     map[string]string // the script's "RESULT key=value" lines; a later key wins
	Duration   time.Duration     // from QEMU's start to its exit
}

// Run boots img under QEMU (TCG, -cpu max, 512 MiB of memfd memory, one
// vhost-user-fs-pci device per share), runs spec.Script inside and waits for
// the guest to power off: Start, then Machine.Wait, then the script's checks.
//
// The error is nil when the script ran to its end, whatever its exit status
// (see Result.ExitStatus). It is not nil when the guest could not boot, load
// its modules or finish the script (a script that powers off by itself
// counts as not finishing), when QEMU failed, or when the timeout expired;
// then QEMU has been killed and reaped, and the error carries the tail of the
// serial console and QEMU's stderr. The Result is returned along with such an
// error whenever QEMU ran.
func Run(ctx context.Context, img *Image, spec Spec) (*Result, error) {
	m, err := Start(ctx, img, spec)
	if err != nil {
		return nil, err
	}
	res, err := m.Wait()
	if err != nil {
		return res, err
	}
	return res, res.scriptError(m.tail)
}

// Machine is a running QEMU started by Start. Wait must be called once,
// whatever happens, to reap QEMU and remove its run directory.
type Machine struct {
	cmd     *exec.Cmd
	qemu    string
	work    string
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
	serial  *syncbuf.Buffer
	stderr  *syncbuf.Buffer
	start   time.Time
	done    chan struct{} // closed once QEMU is reaped
	waitErr error         // valid after done
	qmp     *QMP

	waitOnce sync.Once
	res      *Result
	resErr   error
}

// Start boots img under QEMU as Run does and returns once QEMU runs (and,
// with Spec.QMP, once its QMP monitor answered); ctx and Spec.Timeout bound
// QEMU's life, as in Run. On error nothing is left running.
func Start(ctx context.Context, img *Image, spec Spec) (_ *Machine, err error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	qemu := spec.QEMU
	if qemu == "" {
		if qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return nil, fmt.Errorf("find qemu: %w (apt-get install qemu-system-x86)", err)
		}
	}
	m := &Machine{qemu: qemu, timeout: spec.Timeout, serial: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	if m.timeout <= 0 {
		m.timeout = DefaultTimeout
	}
	if m.work, err = os.MkdirTemp(spec.WorkDir, "guest-run-"); err != nil {
		return nil, fmt.Errorf("create guest run directory: %w", err)
	}
	defer func() {
		if err != nil && m.cmd == nil {
			os.RemoveAll(m.work)
		}
	}()
	if spec.Command != nil {
		if err := os.Chmod(m.work, 0o755); err != nil {
			return nil, fmt.Errorf("open guest run directory to QEMU's user: %w", err)
		}
	}
	initrd := filepath.Join(m.work, "initramfs.cpio")
	if err := writeRunInitramfs(initrd, img.Initramfs, spec); err != nil {
		return nil, err
	}

	m.ctx, m.cancel = context.WithTimeout(ctx, m.timeout)
	command := spec.Command
	if command == nil {
		command = exec.CommandContext
	}
	args := qemuArgs(img.Kernel, initrd, spec.Shares)
	if spec.QMP != "" {
		args = append(args, "-qmp", "unix:"+qemuEscape(spec.QMP)+",server=on,wait=off")
	}
	if spec.Incoming != "" {
		args = append(args, "-incoming", spec.Incoming)
	}
	cmd := command(m.ctx, qemu, args...)
	cmd.Stdout = io.Writer(m.serial)
	if spec.Console != nil {
		cmd.Stdout = io.MultiWriter(m.serial, spec.Console)
	}
	cmd.Stderr = m.stderr
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 5 * time.Second
	// QEMU dies with us: Pdeathsig fires when the thread that forked it ends,
	// so that thread stays locked until Wait returns (golang/go#27505).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	m.start = time.Now()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(m.done)
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", qemu, err)
			return
		}
		started <- nil
		m.waitErr = cmd.Wait()
	}()
	if err := <-started; err != nil {
		m.cancel()
		return nil, err
	}
	m.cmd = cmd
	if spec.QMP != "" {
		if m.qmp, err = m.dialQMP(spec.QMP); err != nil {
			m.cancel()
			_, werr := m.Wait()
			return nil, errors.Join(err, werr)
		}
	}
	return m, nil
}

// qmpTimeout bounds the wait for QEMU's QMP monitor to answer after its start.
const qmpTimeout = 60 * time.Second

// dialQMP connects to QEMU's QMP socket once QEMU has created it.
func (m *Machine) dialQMP(path string) (*QMP, error) {
	deadline := time.Now().Add(qmpTimeout)
	for {
		q, err := DialQMP(path)
		if err == nil {
			return q, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("qemu exited before its QMP monitor answered (%v)\n%s", m.waitErr, m.tail())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qemu's QMP monitor at %s: no answer within %v: %w\n%s", path, qmpTimeout, err, m.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// QMP is the machine's QMP monitor (Spec.QMP), or nil.
func (m *Machine) QMP() *QMP { return m.qmp }

// Serial is the serial console output so far.
func (m *Machine) Serial() string { return m.serial.String() }

// Done is closed once QEMU has exited and been reaped.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Kill kills QEMU (SIGKILL); Wait then returns a "canceled" error.
func (m *Machine) Kill() { m.cancel() }

// Wait waits for QEMU to exit, removes the run directory and returns what
// the console showed. The error is not nil when QEMU failed, was killed
// (Kill, ctx, or the timeout), then with the tail of the serial console and
// QEMU's stderr; whether the script ran to its end is for the caller
// (Run, ParseSerial) to judge. Calling it again returns the same.
func (m *Machine) Wait() (*Result, error) {
	m.waitOnce.Do(func() { m.res, m.resErr = m.wait() })
	return m.res, m.resErr
}

func (m *Machine) wait() (*Result, error) {
	<-m.done
	if m.qmp != nil {
		m.qmp.Close()
	}
	defer m.cancel()
	os.RemoveAll(m.work)
	res := parseSerial(m.serial.String())
	res.Duration = time.Since(m.start)
	switch {
	case m.waitErr == nil:
		// QEMU exited by itself, whatever happened to ctx afterwards.
	case errors.Is(m.ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("guest did not power off within %s, qemu killed\n%s", m.timeout, m.tail())
	case m.ctx.Err() != nil:
		return res, fmt.Errorf("guest run canceled, qemu killed: %w\n%s", context.Cause(m.ctx), m.tail())
	default:
		return res, fmt.Errorf("qemu failed: %w\n%s", m.waitErr, m.tail())
	}
	return res, nil
}

// tail is the end of the serial console and QEMU's stderr, for errors.
func (m *Machine) tail() string {
	s := fmt.Sprintf("serial console (last lines):\n%s", lastLines(m.serial.String(), 30))
	if e := strings.TrimSpace(m.stderr.String()); e != "" {
		s += "\nqemu stderr:\n" + lastLines(e, 10)
	}
	return s
}

// Stderr is what QEMU wrote on its stderr so far.
func (m *Machine) Stderr() string { return m.stderr.String() }

// scriptError says whether the init failed or the script did not finish;
// tail describes the run for the message.
func (r *Result) scriptError(tail func() string) error {
	if msg, ok := r.initError(); ok {
		return fmt.Errorf("guest init failed: %s\n%s", msg, tail())
	}
	if r.ExitStatus < 0 {
		return fmt.Errorf("guest powered off before the script finished (no %s line)\n%s", markerExit, tail())
	}
	return nil
}

func (s Spec) validate() error {
	if err := s.validateGuest(); err != nil {
		return err
	}
	return s.validateSockets()
}

// validateGuest checks what the guest's side needs: a script and tags.
func (s Spec) validateGuest() error {
	if strings.TrimSpace(s.Script) == "" {
		return errors.New("guest spec: empty Script")
	}
	for name := range s.Files {
		if name == "" || path.IsAbs(name) || path.Clean(name) != name || strings.HasPrefix(name, "../") || name == ".." {
			return fmt.Errorf("guest spec: file %q: want a clean relative path such as bin/guestload", name)
		}
	}
	tags := map[string]bool{}
	for i, sh := range s.Shares {
		if !tagPattern.MatchString(sh.Tag) {
			return fmt.Errorf("guest spec: share %d: tag %q must be 1-36 of [A-Za-z0-9_.-]", i, sh.Tag)
		}
		if tags[sh.Tag] {
			return fmt.Errorf("guest spec: share %d: tag %q used twice", i, sh.Tag)
		}
		tags[sh.Tag] = true
	}
	return nil
}

// validateSockets checks the sockets QEMU will connect to or serve.
func (s Spec) validateSockets() error {
	if len(s.QMP) >= maxSocketPath {
		return fmt.Errorf("guest spec: QMP socket path %s is %d bytes, unix sockets allow %d: use a shorter directory", s.QMP, len(s.QMP), maxSocketPath-1)
	}
	for _, sh := range s.Shares {
		if len(sh.Socket) >= maxSocketPath {
			return fmt.Errorf("guest spec: share %s: socket path %s is %d bytes, unix sockets allow %d: use a shorter directory", sh.Tag, sh.Socket, len(sh.Socket), maxSocketPath-1)
		}
		if s.Command != nil {
			continue // a path where QEMU runs, not here
		}
		fi, err := os.Stat(sh.Socket)
		if err != nil {
			return fmt.Errorf("guest spec: share %s: %w (start virtiofsd first)", sh.Tag, err)
		}
		if fi.Mode().Type() != os.ModeSocket {
			return fmt.Errorf("guest spec: share %s: %s is not a socket", sh.Tag, sh.Socket)
		}
	}
	return nil
}

// qemuArgs builds QEMU's command line.
func qemuArgs(kernel, initrd string, shares []Share) []string {
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-smp", "1",
		"-m", guestMemory,
		"-object", "memory-backend-memfd,id=mem,size=" + guestMemory + ",share=on",
		"-numa", "node,memdev=mem",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", KernelCmdline,
	}
	for i, sh := range shares {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=char%d,path=%s", i, qemuEscape(sh.Socket)),
			"-device", fmt.Sprintf("vhost-user-fs-pci,chardev=char%d,tag=%s", i, sh.Tag))
	}
	return args
}

// WriteInitramfs writes the initramfs of one boot of spec to path: img's
// base archive with spec's script and mount points, as Run boots it. It is
// for a VM manager that boots img itself (libvirt, say: kernel img.Kernel,
// this initramfs, KernelCmdline, the serial console to a file, memfd memory of
// 512 MiB shared), whose console output ParseSerial then reads.
func WriteInitramfs(path string, img *Image, spec Spec) error {
	if err := spec.validateGuest(); err != nil {
		return err
	}
	return writeRunInitramfs(path, img.Initramfs, spec)
}

// ParseSerial reads a boot's serial console output as Run does; it errs
// when the guest's init failed or the script did not finish.
func ParseSerial(serial string) (*Result, error) {
	res := parseSerial(serial)
	return res, res.scriptError(func() string { return lastLines(serial, 30) })
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// writeRunInitramfs writes the base initramfs followed by a small archive with
// this run's /script and mount points; the kernel unpacks concatenated
// archives in order.
func writeRunInitramfs(path, base string, spec Spec) error {
	src, err := os.Open(base)
	if err != nil {
		return fmt.Errorf("read guest image (run Prepare again): %w", err)
	}
	defer src.Close()
	err = writeArchive(path, src, func(w *cpioWriter) error {
		w.File("script", 0o755, []byte(spec.Script))
		for _, name := range sortedKeys(spec.Files) {
			for _, d := range parents(name) {
				w.Dir(d, 0o755)
			}
			w.File(name, 0o755, spec.Files[name])
		}
		for _, sh := range spec.Shares {
			w.Dir("mnt/"+sh.Tag, 0o755)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write guest initramfs %s: %w", path, err)
	}
	return nil
}

// sortedKeys returns m's keys in order, so that an archive's bytes do not
// depend on map order.
func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parents lists the folders above a relative path, outermost first:
// "a/b/c" gives "a", "a/b".
func parents(name string) []string {
	var out []string
	for i, c := range name {
		if c == '/' {
			out = append(out, name[:i])
		}
	}
	return out
}

// parseSerial reads the markers out of the console output. ExitStatus is -1
// when the script's exit line is missing.
func parseSerial(serial string) *Result {
	res := &Result{Serial: serial, ExitStatus: -1, Values: map[string]string{}}
	started := false
	for _, line := range strings.Split(serial, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasSuffix(line, markerStart):
			started = true
		case !started:
		case strings.HasPrefix(line, markerExit):
			if n, err := strconv.Atoi(strings.TrimPrefix(line, markerExit)); err == nil {
				res.ExitStatus = n
			}
		case strings.HasPrefix(line, markerResult):
			k, v, ok := strings.Cut(strings.TrimPrefix(line, markerResult), "=")
			if ok && k != "" {
				res.Values[k] = v
			}
		}
	}
	return res
}

// initError returns the message of the init's error line, if any.
func (r *Result) initError() (string, bool) {
	for _, line := range strings.Split(r.Serial, "\n") {
		if msg, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), markerError+" "); ok {
			return msg, true
		}
	}
	return "", false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
