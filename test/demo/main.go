// Command demo is `make demo`: it shows virtiofsd-shim doing its job inside
// a private systemd (the host's own service manager is never touched), from
// enabling an instance to a VM reading and writing the share, then tears it
// all down. Each step says what it is doing.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/demoguest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) {
	fmt.Printf("\n\033[1m==> %s\033[0m\n", fmt.Sprintf(format, a...))
}

// show runs a command inside the box and prints it with its output.
func show(ctx context.Context, b *shimbox.Box, name string, args ...string) (string, error) {
	fmt.Printf("$ %s %s\n", name, strings.Join(args, " "))
	out, err := b.Run(ctx, name, args...)
	fmt.Print(indent(out))
	return out, err
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo boots a private systemd in new namespaces, which needs root: run sudo make demo")
	}
	step("Booting a private systemd (PID 1 of new namespaces) with virtiofsd-shim's units and binary installed")
	b, err := shimbox.Boot(ctx, shimbox.Options{Name: "virtiofsd-shim-demo"})
	if err != nil {
		return err
	}
	defer func() {
		step("Tearing the private systemd down")
		if err := b.Close(); err != nil {
			fmt.Printf("    teardown: %v\n", err)
		} else {
			fmt.Println("    done: no process of it is left")
		}
	}()
	fmt.Printf("    systemd pid %d on the host; binary at %s; units in /run/systemd/system\n", b.PID(), shimbox.BinaryPath)

	qs := theQuickStart()
	step("Making a share with a file in it, and /etc/virtiofsd/demo.conf")
	share, err := b.AddInstance(qs.instance, qs.config...)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(share, demoguest.HostFile), []byte("Hello from the host\n"), 0o644); err != nil {
		return err
	}
	if _, err := show(ctx, b, "cat", "/etc/virtiofsd/demo.conf"); err != nil {
		return err
	}
	if err := runAll(ctx, b, qs.beforeVM); err != nil {
		return err
	}

	if err := connect(ctx, b); err != nil {
		return err
	}
	if err := bootGuest(ctx, b, share); err != nil {
		return err
	}

	b.Run(ctx, "journalctl", "--sync")
	if err := runAll(ctx, b, qs.afterVM); err != nil {
		return err
	}
	step("One journal entry in full: SYSLOG_IDENTIFIER, VIRTIOFSD_INSTANCE, VIRTIOFSD_PID, PRIORITY")
	show(ctx, b, "journalctl", "--no-pager", "-n", "1", "-o", "verbose", "VIRTIOFSD_INSTANCE=demo", "SYSLOG_IDENTIFIER=virtiofsd",
		"--output-fields=MESSAGE,PRIORITY,SYSLOG_IDENTIFIER,VIRTIOFSD_INSTANCE,VIRTIOFSD_PID,_SYSTEMD_UNIT")
	return nil
}

// bootGuest boots a real VM (QEMU, Debian's cloud kernel, busybox) whose
// virtiofs device connects to the instance's socket.
func bootGuest(ctx context.Context, b *shimbox.Box, share string) error {
	step("Booting a real guest (QEMU under TCG) whose vhost-user-fs device uses %s", shimbox.SocketPath("demo"))
	fmt.Println("    each VM start is one session: socket activation starts virtiofsd@demo.service again")
	res, err := demoguest.Boot(ctx, b, "demo", nil)
	if err != nil {
		return fmt.Errorf("boot the demo guest: %w", err)
	}
	fmt.Printf("    the guest (kernel %s) mounted the share with: mount -t virtiofs demo /mnt/demo\n", res.Values["kernel"])
	fmt.Printf("    it read %s: %q\n", demoguest.HostFile, res.Values["read"])
	fmt.Printf("    it wrote %s and listed: %s\n", res.Values["wrote"], res.Values["listing"])
	got, err := os.ReadFile(filepath.Join(share, demoguest.GuestFile))
	if err != nil {
		return fmt.Errorf("the host does not see the guest's file: %w", err)
	}
	fmt.Printf("    on the host, %s says: %s", filepath.Join(share, demoguest.GuestFile), got)
	fmt.Printf("    boot to power-off took %v\n", res.Duration.Round(100*time.Millisecond))
	return nil
}

// connect plays a VM's first message: a vhost-user probe through the
// systemd-owned socket, which socket activation answers by starting the
// service.
func connect(ctx context.Context, b *shimbox.Box) error {
	step("A client connects (a vhost-user GET_FEATURES probe, as QEMU's first message): socket activation starts the shim")
	c, err := b.Dial("demo", 15*time.Second)
	if err != nil {
		return fmt.Errorf("connect to the instance's socket: %w", err)
	}
	fmt.Println("    virtiofsd answered GET_FEATURES through " + shimbox.SocketPath("demo"))
	show(ctx, b, "systemctl", "status", "--no-pager", "virtiofsd@demo.service")
	step("The client hangs up: virtiofsd exits 0, the service goes inactive (not failed), the socket listens again")
	c.Close()
	for i := 0; i < 100; i++ {
		out, _ := b.Systemctl(ctx, "show", "-p", "ActiveState", "virtiofsd@demo.service")
		if strings.Contains(out, "inactive") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	show(ctx, b, "systemctl", "is-active", "virtiofsd@demo.service", "virtiofsd@demo.socket")
	return nil
}
