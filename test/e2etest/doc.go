// Package e2etest boots a real guest that mounts virtiofs through the systemd-owned socket.
//
// Its tests (root only) run the project's units and binary in a private
// systemd (package shimbox), enable virtiofsd@<instance>.socket and boot a
// QEMU/TCG guest (package guest) whose vhost-user-fs device connects to
// /run/virtiofsd/<instance>.sock inside that systemd: the first connection
// starts the service by socket activation, the guest's power-off ends the
// session, and the next boot starts a new one.
//
// The demo's guest (test/testenv/demoguest) is the boot most tests make;
// Sessions groups an instance's journal by service invocation, one group
// per session. The package has no non-test code.
package e2etest
