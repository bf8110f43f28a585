package libvirt

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"libvirt.org/go/libvirtxml"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/domainxml"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/guest"
)

// The test domain carries what vhost-user and the test guest need.
func TestDomainXML(t *testing.T) {
	d := Domain{
		Name:          "lv1",
		Filesystems:   []libvirtxml.DomainFilesystem{domainxml.Filesystem("/run/virtiofsd/lv1.sock", "lv1")},
		MemoryBacking: domainxml.MemoryBacking(),
	}
	x, err := d.XML("/k", "/i", "/c")
	require.NoError(t, err)
	var got libvirtxml.Domain
	require.NoError(t, got.Unmarshal(x), x)

	assert.Equal(t, "qemu", got.Type, "TCG")
	require.NotNil(t, got.MemoryBacking)
	assert.Equal(t, "memfd", got.MemoryBacking.MemorySource.Type)
	assert.Equal(t, "shared", got.MemoryBacking.MemoryAccess.Mode)
	require.Len(t, got.CPU.Numa.Cell, 1)
	assert.Equal(t, "shared", got.CPU.Numa.Cell[0].MemAccess)
	assert.Equal(t, uint(memoryMiB), got.CPU.Numa.Cell[0].Memory, "the cell holds all the memory")
	assert.NotNil(t, got.Features.ACPI, "without ACPI the guest's poweroff only halts")
	assert.Equal(t, guest.KernelCmdline, got.OS.Cmdline)
	assert.Equal(t, "/k", got.OS.Kernel)
	assert.Equal(t, "/i", got.OS.Initrd)
	assert.Equal(t, "/c", got.Devices.Serials[0].Source.File.Path)
	assert.Equal(t, "destroy", got.OnReboot, "a panic (panic=-1) ends the domain")
	require.Len(t, got.Devices.Filesystems, 1)
	assert.Equal(t, "/run/virtiofsd/lv1.sock", got.Devices.Filesystems[0].Source.Mount.Socket)
}
