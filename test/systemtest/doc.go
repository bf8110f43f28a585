// Package systemtest checks the project's units and binary under a real, private systemd.
//
// Each test boots a private systemd (test/testenv/shimbox) with
// units/virtiofsd@.socket, units/virtiofsd@.service, the generator and a
// freshly built virtiofsd-shim installed, once per leg (Debian 12 and 13,
// shimbox.Legs), drives it with systemctl and journalctl inside
// the box, and connects to /run/virtiofsd/NAME.sock like a VM would. The
// tests need root and the C virtiofsd (/usr/lib/qemu/virtiofsd); they skip,
// saying why, without them. The rootless tests (rootless_test.go) add a test
// user with their own manager in the box and the user units of units/user,
// and run everything as that user, QEMU and libvirt's session mode included,
// with the real Rust virtiofsd: Debian 13's run through its tree's loader in
// a Debian 12 box, and the one the .deb brings in a Debian 13 box; the user
// generator's keys (SOCKET_MODE, STANDBY) included. Two tests of whole
// systems came from product packages: list of 30 instances in every state
// of a real systemd (list_test.go), and the built shim handed a socket the
// way systemd does, with the real C and Rust virtiofsd and no box
// (realvirtiofsd_test.go). The package has no non-test code.
package systemtest
