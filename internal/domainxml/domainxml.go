// Package domainxml says what a libvirt domain needs to use an instance's
// socket: the <filesystem> device and the shared memory backing that
// vhost-user requires, marshalled with libvirt.org/go/libvirtxml.
package domainxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// Queue is the virtqueue size of the device, as libvirt's examples and
// the project's tests use it.
const Queue = 1024

// MaxTagLen is the longest virtiofs mount tag the guest kernel accepts.
const MaxTagLen = 36

// Filesystem is the <filesystem> element of a device served by an
// externally launched virtiofsd listening on socket: libvirt starts no
// virtiofsd for it and passes the path to QEMU's -chardev socket.
func Filesystem(socket, tag string) libvirtxml.DomainFilesystem {
	return libvirtxml.DomainFilesystem{
		XMLName: xml.Name{Local: "filesystem"},
		Driver:  &libvirtxml.DomainFilesystemDriver{Type: "virtiofs", Queue: Queue},
		Source: &libvirtxml.DomainFilesystemSource{
			Mount: &libvirtxml.DomainFilesystemSourceMount{Socket: socket},
		},
		Target: &libvirtxml.DomainFilesystemTarget{Dir: tag},
	}
}

// MemoryBacking is the <memoryBacking> every vhost-user device needs: guest
// memory in a memfd, shared with virtiofsd.
func MemoryBacking() libvirtxml.DomainMemoryBacking {
	return libvirtxml.DomainMemoryBacking{
		MemorySource: &libvirtxml.DomainMemorySource{Type: "memfd"},
		MemoryAccess: &libvirtxml.DomainMemoryAccess{Mode: "shared"},
	}
}

// memoryBackingName is the element name of DomainMemoryBacking, which
// libvirtxml only names inside a <domain>.
var memoryBackingName = xml.Name{Local: "memoryBacking"}

// Snippet is the text `virtiofsd-shim check --libvirt` prints: the
// <filesystem> element to paste into <devices>, the <memoryBacking> to paste
// into <domain>, each after a comment that says where it goes.
func Snippet(instance, socket, tag string) (string, error) {
	if tag == "" || len(tag) > MaxTagLen {
		return "", fmt.Errorf("mount tag %q of instance %s: need 1 to %d bytes (the guest kernel's limit); choose one with --tag", tag, instance, MaxTagLen)
	}
	fs := Filesystem(socket, tag)
	mb := MemoryBacking()
	var buf bytes.Buffer
	for _, part := range []struct {
		comment string
		v       any
		name    xml.Name
	}{
		{fmt.Sprintf("virtiofsd-shim instance %s: paste into <devices> (virsh edit DOMAIN); in the guest: mount -t virtiofs %s /mnt/%s", instance, tag, tag), &fs, fs.XMLName},
		{"vhost-user needs guest memory shared with virtiofsd: paste into <domain>. With a <numa> in <cpu>, give each <cell> memAccess='shared' as well", &mb, memoryBackingName},
	} {
		fmt.Fprintf(&buf, "<!-- %s -->\n", part.comment)
		enc := xml.NewEncoder(&buf)
		enc.Indent("", "  ")
		if err := enc.EncodeElement(part.v, xml.StartElement{Name: part.name}); err != nil {
			return "", fmt.Errorf("marshal the libvirt XML of instance %s: %w", instance, err)
		}
		buf.WriteString("\n")
	}
	fmt.Fprintf(&buf, "<!-- QEMU connects to %s as its own user (libvirt-qemu on Debian, qemu on Fedora): give it the socket with SOCKET_GROUP or a SocketGroup= drop-in, see virtiofsd-shim(8) -->\n", socket)
	return buf.String(), nil
}

// Parsed is what ParseSnippet read back.
type Parsed struct {
	Filesystem    libvirtxml.DomainFilesystem
	MemoryBacking libvirtxml.DomainMemoryBacking
}

// ParseSnippet reads what Snippet printed: exactly one <filesystem> and one
// <memoryBacking>, comments and white space between them.
func ParseSnippet(s string) (*Parsed, error) {
	dec := xml.NewDecoder(strings.NewReader(s))
	var p Parsed
	var seen []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse libvirt XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "filesystem":
				err = dec.DecodeElement(&p.Filesystem, &t)
			case memoryBackingName.Local:
				err = dec.DecodeElement(&p.MemoryBacking, &t)
			default:
				err = fmt.Errorf("unexpected element <%s>", t.Name.Local)
			}
			if err != nil {
				return nil, fmt.Errorf("parse libvirt XML: %w", err)
			}
			seen = append(seen, t.Name.Local)
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return nil, fmt.Errorf("parse libvirt XML: text %q outside the elements", strings.TrimSpace(string(t)))
			}
		}
	}
	if strings.Join(seen, " ") != "filesystem memoryBacking" {
		return nil, fmt.Errorf("parse libvirt XML: want <filesystem> then <memoryBacking>, got %v", seen)
	}
	return &p, nil
}
