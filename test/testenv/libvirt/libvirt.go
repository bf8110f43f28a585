// Package libvirt boots test guests through libvirt (virsh define, start,
// destroy), their shares served by virtiofsd-shim instances' sockets, inside
// a platform leg's private systemd. The suites test/libvirttest (the
// scenarios every leg runs), test/migrationtest (virsh migrate) and
// test/systemtest (libvirt's session mode) share it.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// Box is what the scenarios need of a leg's booted private systemd with the
// project installed; *shimbox.Box is one. Paths are as seen inside the box;
// Path maps them to the host.
type Box interface {
	Run(ctx context.Context, name string, args ...string) (string, error)
	Systemctl(ctx context.Context, args ...string) (string, error)
	Path(inside string) string
	// AddInstance makes a share for the instance, writes its config with
	// SHARED_DIR and the extra lines, and returns the share (inside path).
	AddInstance(instance string, extra ...string) (string, error)
	Configure(instance, content string) error
	Journal(ctx context.Context, args ...string) ([]shimbox.JournalEntry, error)
}

// Leg is what the scenarios need to know about a platform leg.
type Leg struct {
	// Name names the leg in messages: "debian12".
	Name string
	// QEMUUser is the user libvirt runs QEMU as, and SocketGroup the group
	// that gives it an instance's socket (Debian: libvirt-qemu for both).
	QEMUUser, SocketGroup string
	// Image is the test guest, on the host (copied into the box per domain).
	Image *guest.Image
	// LibvirtVersion is what `virsh version` reports for the library, e.g.
	// "9.0.0"; StartLibvirt reads it.
	LibvirtVersion string
}

// Overlays are the directories libvirt writes that a leg's box must keep to
// itself (its domains are in /etc/libvirt, which every box overlays).
func Overlays() []string {
	return []string{"/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"}
}

// ImagesDir is where a domain's kernel, initramfs and serial console live
// inside the box (under an overlay of Overlays).
const ImagesDir = "/var/lib/libvirt/images"

// StartLibvirt starts libvirtd and virtlogd by their sockets, as Debian's
// libvirt-daemon-system ships them, has libvirt probe QEMU's capabilities
// (probeQEMU), and returns libvirt's version.
func StartLibvirt(ctx context.Context, b Box) (string, error) {
	if out, err := b.Systemctl(ctx, "start", "libvirtd.socket", "virtlogd.socket"); err != nil {
		return "", fmt.Errorf("start libvirt's sockets (apt-get install libvirt-daemon-system libvirt-daemon-driver-qemu): %w: %s", err, out)
	}
	out, err := Virsh(ctx, b, "version")
	if err != nil {
		return "", fmt.Errorf("virsh version: %w", err)
	}
	if err := probeQEMU(ctx, b); err != nil {
		return "", err
	}
	// "Using library: libvirt 9.0.0"
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Using library: libvirt "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("virsh version: no library version in %q", out)
}

// probeTimeout bounds libvirt's probe of QEMU's capabilities, which takes a
// few seconds under TCG.
const probeTimeout = 90 * time.Second

// probeQEMU has libvirtd probe QEMU's capabilities now, bounded, rather than
// at the first define of a test. libvirt probes by running QEMU with
// "-machine none" and talking QMP to it. Once here (libvirt 9.0, QEMU 7.2),
// the probe's QEMU sat in a blocking accept() on its QMP socket while
// libvirt waited on the connection QEMU had already accepted: neither ever
// moved again, and the define waiting for the probe hung. A probe that does
// not finish in time is killed and libvirtd restarted, once; a second hang
// fails the test.
func probeQEMU(ctx context.Context, b Box) error {
	for attempt := 1; ; attempt++ {
		_, err := virshWithin(ctx, b, probeTimeout, "domcapabilities", "--virttype", "qemu")
		if err == nil {
			return nil
		}
		if attempt == 2 {
			return fmt.Errorf("libvirt's probe of QEMU's capabilities, tried twice: %w", err)
		}
		// libvirtd.service has KillMode=process: its probe outlives it.
		_, _ = b.Run(ctx, "pkill", "-KILL", "-f", "^[^ ]*qemu-system-[^ ]* .*-machine none")
		if out, err := b.Systemctl(ctx, "restart", "libvirtd.service"); err != nil {
			return fmt.Errorf("restart libvirtd after a hung probe of QEMU: %w: %s", err, out)
		}
	}
}

// virshTimeout bounds every virsh call, so that a libvirt that hangs fails
// the test with the command that hung instead of holding the whole run.
const virshTimeout = 3 * time.Minute

// Virsh runs virsh against the box's libvirtd (qemu:///system) and returns
// its output; the error carries the output too, where virsh says why. It
// gives up after virshTimeout.
func Virsh(ctx context.Context, b Box, args ...string) (string, error) {
	return virshWithin(ctx, b, virshTimeout, args...)
}

// virshWithin is Virsh bounded by d, which timeout(1) enforces inside the box
// (cancelling nsenter would leave virsh running there).
func virshWithin(ctx context.Context, b Box, d time.Duration, args ...string) (string, error) {
	argv := append([]string{"--kill-after=5", strconv.Itoa(int(d.Seconds())), "virsh", "-c", "qemu:///system"}, args...)
	out, err := b.Run(ctx, "timeout", argv...)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 124 {
			return out, fmt.Errorf("virsh %s: no answer within %v: %s", strings.Join(args, " "), d, strings.TrimSpace(out))
		}
		return out, fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return out, nil
}

// Domain describes a test guest.
type Domain struct {
	Name string
	// Filesystems and MemoryBacking are what `virtiofsd-shim check
	// --libvirt` printed for the instances (domainxml.ParseSnippet).
	Filesystems   []libvirtxml.DomainFilesystem
	MemoryBacking libvirtxml.DomainMemoryBacking
	// Script runs in the guest (guest.Spec.Script); the guest powers off
	// when it ends. It mounts each share with
	// mount -t virtiofs TAG /mnt/TAG.
	Script string
}

// memoryMiB is the guest's RAM, all of it in the one NUMA cell that shares
// it with virtiofsd.
const memoryMiB = 512

// XML is the domain's libvirt XML, marshalled by libvirtxml: TCG (type
// qemu), direct kernel boot, shared memfd memory in one NUMA cell with
// memAccess='shared', the serial console to a file, no other devices.
func (d Domain) XML(kernel, initrd, console string) (string, error) {
	cell := uint(0)
	dom := libvirtxml.Domain{
		Type:          "qemu",
		Name:          d.Name,
		Memory:        &libvirtxml.DomainMemory{Value: memoryMiB, Unit: "MiB"},
		VCPU:          &libvirtxml.DomainVCPU{Value: 1},
		MemoryBacking: &d.MemoryBacking,
		CPU: &libvirtxml.DomainCPU{
			Mode: "maximum",
			Numa: &libvirtxml.DomainNuma{Cell: []libvirtxml.DomainCell{{
				ID: &cell, CPUs: "0", Memory: memoryMiB, Unit: "MiB", MemAccess: "shared",
			}}},
		},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"},
			Kernel:  kernel,
			Initrd:  initrd,
			Cmdline: guest.KernelCmdline,
		},
		// ACPI, or the guest's poweroff only halts it (libvirt passes -no-acpi
		// without it).
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		OnPoweroff: "destroy",
		OnReboot:   "destroy",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Filesystems: d.Filesystems,
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: console}},
			}},
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
			MemBalloon:  &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	return dom.Marshal()
}

// Guest is a defined domain. Undefine it (and its files) when done: a second
// define of a domain of the same name and no uuid fails.
type Guest struct {
	b    Box
	Name string
	// Dir holds its kernel, initramfs and console.log, inside the box.
	Dir string
	XML string
}

// Define writes the domain's files (Place) and defines it with `virsh
// define --validate`, which checks the XML against libvirt's schema.
func Define(ctx context.Context, b Box, img *guest.Image, d Domain) (*Guest, error) {
	g, err := Place(b, img, d)
	if err != nil {
		return nil, err
	}
	if _, err := Virsh(ctx, b, "define", "--validate", filepath.Join(g.Dir, "domain.xml")); err != nil {
		return nil, err
	}
	return g, nil
}

// Place writes the domain's kernel, initramfs (the script), XML
// (domain.xml) and an empty console file under ImagesDir/NAME in the box,
// without defining it: what the destination host of a migration needs
// there, at the same paths as on the source.
func Place(b Box, img *guest.Image, d Domain) (*Guest, error) {
	dir := filepath.Join(ImagesDir, d.Name)
	g := &Guest{b: b, Name: d.Name, Dir: dir}
	if err := os.MkdirAll(b.Path(dir), 0o755); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	var tags []guest.Share
	for _, fs := range d.Filesystems {
		if fs.Target != nil {
			tags = append(tags, guest.Share{Tag: fs.Target.Dir})
		}
	}
	kernel, initrd, console := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio"), filepath.Join(dir, "console.log")
	// A copy of the kernel: libvirt chowns the kernel and initramfs it boots
	// to QEMU's user for the run, which must not touch the shared cache.
	if err := copyFile(b.Path(kernel), img.Kernel); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	if err := guest.WriteInitramfs(b.Path(initrd), img, guest.Spec{Script: d.Script, Shares: tags}); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	x, err := d.XML(kernel, initrd, console)
	if err != nil {
		return nil, fmt.Errorf("domain %s: marshal its XML: %w", d.Name, err)
	}
	g.XML = x
	if err := os.WriteFile(b.Path(filepath.Join(dir, "domain.xml")), []byte(x), 0o644); err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	return g, nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// Start runs virsh start; libvirt's error, when it fails, is in the error.
func (g *Guest) Start(ctx context.Context) error {
	_, err := Virsh(ctx, g.b, "start", g.Name)
	return err
}

// State is the domain's state as virsh domstate says it: "running",
// "shut off", ...
func (g *Guest) State(ctx context.Context) (string, error) {
	out, err := Virsh(ctx, g.b, "domstate", g.Name)
	return strings.TrimSpace(out), err
}

// WaitShutOff waits for the guest to power off (its script ended) and
// returns what its script reported on the serial console.
func (g *Guest) WaitShutOff(ctx context.Context, timeout time.Duration) (*guest.Result, error) {
	deadline := time.Now().Add(timeout)
	// The console is a file read; virsh is two processes that compete with
	// the TCG guest for the CPU: ask virsh only once
	// the kernel says it powers off or reboots (a panic), or the time is nearly
	// up.
	for time.Now().Before(deadline.Add(-5*time.Second)) && !strings.Contains(g.Console(), "reboot: ") {
		time.Sleep(50 * time.Millisecond)
	}
	for {
		state, err := g.State(ctx)
		if err != nil {
			return nil, err
		}
		if state == "shut off" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("domain %s still %s after %s; console:\n%s", g.Name, state, timeout, g.Console())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return guest.ParseSerial(g.Console())
}

// Console is the serial console so far.
func (g *Guest) Console() string {
	b, err := os.ReadFile(g.b.Path(filepath.Join(g.Dir, "console.log")))
	if err != nil {
		return fmt.Sprintf("(no console: %v)", err)
	}
	return string(b)
}

// WaitConsole waits for the console to contain s.
func (g *Guest) WaitConsole(s string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if strings.Contains(g.Console(), s) {
			return nil
		}
	}
	return fmt.Errorf("domain %s: %q not on its console after %s:\n%s", g.Name, s, timeout, g.Console())
}

// Destroy is virsh destroy: QEMU is killed, as by a host admin.
func (g *Guest) Destroy(ctx context.Context) error {
	_, err := Virsh(ctx, g.b, "destroy", g.Name)
	return err
}

// Remove destroys the domain if it runs, undefines it and removes its
// files.
func (g *Guest) Remove(ctx context.Context) error {
	var errs []error
	if state, err := g.State(ctx); err == nil && state != "shut off" {
		errs = append(errs, g.Destroy(ctx))
	}
	if _, err := Virsh(ctx, g.b, "undefine", g.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, os.RemoveAll(g.b.Path(g.Dir)))
	return errors.Join(errs...)
}
