// Package virtiofsd is what the shim knows about the virtiofsd binaries, C
// (QEMU's) and Rust: where they are installed, how to tell their flavor and
// version, the argv of each flavor, and what their stderr lines and exit
// statuses mean.
package virtiofsd
