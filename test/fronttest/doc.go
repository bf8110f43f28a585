// Package fronttest judges internal/front against the real binaries: the
// test process runs a front.Front between a real QEMU 10 guest (TCG) and a
// real Rust virtiofsd 1.13.2, both from the Debian 13 tree (distro) and run
// on this host through that tree's loader, and swaps virtiofsd under the
// guest while its workload checks its own data.
//
// Each virtiofsd gets a private listening socket as fd 3 (--fd=3, the
// shim's argv from internal/virtiofsd); the test connects to it, as the
// shim will. QEMU connects to the test's own listening socket, which stands
// for the systemd-owned one.
package fronttest
