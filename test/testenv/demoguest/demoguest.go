// Package demoguest boots the demo's guest: it mounts an instance's share
// through the systemd-owned socket, reads a file the host wrote and writes
// one back. make demo (test/demo) shows it; test/e2etest boots it in its
// tests.
package demoguest

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// Files Boot reads and writes at the top of the share.
const (
	HostFile  = "hello-from-host.txt"  // the caller writes it; the guest reads it
	GuestFile = "hello-from-guest.txt" // the guest writes it
)

// Timeout bounds one Boot; a boot takes about 2-3 s under TCG.
const Timeout = 60 * time.Second

// demoScript mounts the share, reads HostFile, writes GuestFile and lists the
// share. Its RESULT lines: read (HostFile's first line), kernel, wrote,
// listing (names separated by spaces).
const demoScript = `set -e
mount -t virtiofs "$TAG" "/mnt/$TAG"
cd "/mnt/$TAG"
echo "RESULT read=$(head -n 1 ` + HostFile + `)"
echo "RESULT kernel=$(uname -r)"
echo "hello from the guest, kernel $(uname -r)" > ` + GuestFile + `
echo "RESULT wrote=` + GuestFile + `"
echo "RESULT listing=$(ls | tr '\n' ' ')"
cd /
umount "/mnt/$TAG"
`

// Boot boots a guest whose one virtiofs device (tag = instance) connects
// to the socket of virtiofsd@<instance>.socket in b, which must be enabled;
// the connection starts the service by socket activation. The guest mounts
// the share, reads HostFile from it (the caller writes that file into the
// instance's SHARED_DIR first), writes GuestFile and lists the share, then
// powers off, which ends the session. The serial console is copied to
// console when it is not nil.
//
// The error is nil only when the script ran to its end with status 0; the
// Result is returned whenever the guest ran, with Values "read", "kernel",
// "wrote" and "listing".
func Boot(ctx context.Context, b *shimbox.Box, instance string, console io.Writer) (*guest.Result, error) {
	img, err := guest.Prepare(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("prepare the guest image: %w", err)
	}
	qemu, err := b.Platform.QEMU(ctx)
	if err != nil {
		return nil, err
	}
	res, err := guest.Run(ctx, img, guest.Spec{
		QEMU:    qemu,
		Shares:  []guest.Share{{Tag: instance, Socket: b.Socket(instance)}},
		Script:  "TAG=" + instance + "\n" + demoScript,
		Timeout: Timeout,
		Console: console,
	})
	if err != nil {
		return res, fmt.Errorf("boot a guest on virtiofsd@%s.socket: %w", instance, err)
	}
	if res.ExitStatus != 0 {
		return res, fmt.Errorf("guest on virtiofsd@%s.socket: script exited with status %d\nserial console:\n%s", instance, res.ExitStatus, res.Serial)
	}
	return res, nil
}
