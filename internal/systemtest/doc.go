// Package systemtest checks the project's units and binary under a real, private systemd.
//
// Each test boots a private systemd (internal/testenv/shimbox) with
// units/virtiofsd@.socket, units/virtiofsd@.service and a freshly built
// virtiofsd-shim installed, drives it with systemctl and journalctl inside
// the box, and connects to /run/virtiofsd/NAME.sock like a VM would. The
// tests need root and the C virtiofsd (/usr/lib/qemu/virtiofsd); they skip,
// saying why, without them. The package has no non-test code.
package systemtest
