// Package libvirttest boots test guests through libvirt (package
// test/testenv/libvirt), their shares served by virtiofsd-shim instances'
// sockets, inside a platform leg's private systemd.
//
// The tests are scenarios, functions of the booted box and the leg's facts
// (scenarios), so that every platform leg runs the same ones (TestLibvirt):
// Debian 12's libvirt 9.0 and Debian 13's libvirt 11. The package has no
// non-test code.
package libvirttest
