package bench

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/instances"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// BenchmarkList200 lists 200 instances with internal/instances (enabled sockets, 10 of them serving
// a client) in a private systemd: "lister" is one List call on an open
// connection (through the box's systemd-stdio-bridge); "command" is the whole
// `virtiofsd-shim list --json` run inside the box as root, over
// /run/systemd/private, process start and connection included.
func BenchmarkList200(b *testing.B) {
	const n, serving = 200, 10
	box := shimbox.New(b, shimbox.Options{})
	ctx := b.Context()
	units := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("vm%03d", i)
		if _, err := box.AddInstance(name); err != nil {
			b.Fatal(err)
		}
		units[i] = "virtiofsd@" + name + ".socket"
	}
	if out, err := box.Systemctl(ctx, append([]string{"enable", "--now"}, units...)...); err != nil {
		b.Fatal(out, err)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range serving {
		c, err := box.Dial(fmt.Sprintf("vm%03d", i*(n/serving)), 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}

	b.Run("lister", func(b *testing.B) {
		bus, err := sdbus.Dial(box.SystemdBus)
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close()
		l := instances.Lister{Bus: bus, ConfigDir: box.Path(shimbox.ConfigDir), ProcRoot: box.Path("/proc")}
		b.ResetTimer()
		for b.Loop() {
			list, err := l.List(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if len(list) != n {
				b.Fatalf("%d instances listed, want %d", len(list), n)
			}
		}
	})
	b.Run("command", func(b *testing.B) {
		for b.Loop() {
			if out, err := box.Run(ctx, shimbox.BinaryPath, "list", "--json"); err != nil {
				b.Fatal(out, err)
			}
		}
	})
}
