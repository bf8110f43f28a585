// Package migrationtest live-migrates a real guest between two hosts, each a
// private systemd with virtiofsd-shim installed, while the guest keeps a file
// on its virtiofs share open and keeps writing to it (the pair and the
// migration: test/testenv/migration). The scenarios are in
// migration_test.go, libvirt's virsh migrate in libvirt_test.go. The package
// has no non-test code.
package migrationtest
