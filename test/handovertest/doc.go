// Package handovertest judges the handovers of issue 24 by a guest that
// checks its own data: a real guest (TCG) runs guestload's check mode on
// shares of the shipped units in a private systemd, while the test reloads
// and restarts their services under it, and makes reloads fail on purpose.
//
// A handover passes when the guest saw no error and kept working (every
// operation returned; after a restart, the file-handles share's open,
// deleted file alone fails: a restart cannot carry it), its data reads back on the host, QEMU saw no
// vhost-user disconnect, and the typed state shows a new virtiofsd (a new
// shim after a restart) and counts the handovers. It never passes because
// "the socket answered".
//
// One guest boot per leg carries every round: Debian 13 (systemd 257, QEMU
// 10, the Rust virtiofsd 1.13.2) and Debian 12 (systemd 252) with the Debian
// 13 tree's QEMU 10 and Rust virtiofsd run through that tree's loader (Debian
// 12's own QEMU 7.2 is e2etest's and fronttest's), and there also an
// instance of the C virtiofsd, whose reload is refused.
package handovertest
