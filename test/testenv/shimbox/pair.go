package shimbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/sdbox"
)

// Pair is two hosts of one leg, the source and the destination of a live
// migration: two boxes booted by Boot with the same Options, each a private
// systemd of its own (so each in a cgroup of its own, see sdbox: a systemd
// takes the cgroup it starts in as its root, and two in one would share
// virtiofsd@NAME.service's cgroup), and a folder Dir on this host that both
// see at the same path (under /var/tmp, which the Debian 13 boxes bind and
// the Debian 12 boxes share with the host). Shares live in Dir, so the same
// config names the same files on both hosts, as shared storage does.
type Pair struct {
	Src, Dst *Box
	// Dir is the folder both boxes see; Share makes shares in it.
	Dir string
}

// BootPair boots the two boxes side by side, named o.Name+"-src" and
// o.Name+"-dst" (o.Name defaults to "pair"). On error nothing is left
// running.
func BootPair(ctx context.Context, o Options) (_ *Pair, err error) {
	if o.Name == "" {
		o.Name = "pair"
	}
	dir, err := os.MkdirTemp("/var/tmp", "shimpair-")
	if err != nil {
		return nil, fmt.Errorf("create the pair's shared folder: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Pair{Dir: dir}
	type booted struct {
		role string
		b    *Box
		err  error
	}
	ch := make(chan booted, 2)
	for _, role := range []string{"src", "dst"} {
		go func() {
			bo := o
			bo.Name = o.Name + "-" + role
			b, err := Boot(ctx, bo)
			if err != nil {
				err = fmt.Errorf("boot the %s host: %w", role, err)
			}
			ch <- booted{role, b, err}
		}()
	}
	var errs []error
	for range 2 {
		r := <-ch
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.role == "src":
			p.Src = r.b
		default:
			p.Dst = r.b
		}
	}
	if len(errs) > 0 {
		for _, b := range []*Box{p.Src, p.Dst} {
			if b != nil {
				errs = append(errs, b.Close())
			}
		}
		os.RemoveAll(dir)
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// NewPair boots a pair for a test and tears it down when the test ends; it
// skips, saying why, when not root.
func NewPair(t testing.TB, o Options) *Pair {
	t.Helper()
	sdbox.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p, err := BootPair(ctx, o)
	if err != nil {
		t.Fatalf("boot two private systemds with virtiofsd-shim: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("tear the pair down: %v", err)
		}
	})
	return p
}

// Boxes are the source and the destination, in that order.
func (p *Pair) Boxes() []*Box { return []*Box{p.Src, p.Dst} }

// Share makes a folder in Dir that both hosts see, and returns its path.
func (p *Pair) Share(name string) (string, error) {
	dir := filepath.Join(p.Dir, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// Configure writes the same /etc/virtiofsd/<instance>.conf on both hosts.
func (p *Pair) Configure(instance, content string) error {
	for _, b := range p.Boxes() {
		if err := b.Configure(instance, content); err != nil {
			return err
		}
	}
	return nil
}

// Close tears both boxes down and removes Dir.
func (p *Pair) Close() error {
	return errors.Join(p.Src.Close(), p.Dst.Close(), os.RemoveAll(p.Dir))
}
