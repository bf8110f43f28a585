package instances

import (
	"context"
	"slices"
	"strings"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/sdbus"
)

// fakeBus pretends to be systemd: a fixed set of loaded units and their
// properties.
type fakeBus struct {
	units []sddbus.UnitStatus
	props map[godbus.ObjectPath]map[string]godbus.Variant
}

func unitPath(name string) godbus.ObjectPath {
	return godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(name))
}

// add loads a unit with states and, for GetAll, properties.
func (f *fakeBus) add(name, active, sub string, props map[string]any) {
	if f.props == nil {
		f.props = map[godbus.ObjectPath]map[string]godbus.Variant{}
	}
	f.units = append(f.units, sddbus.UnitStatus{Name: name, LoadState: "loaded", ActiveState: active, SubState: sub, Path: unitPath(name)})
	p := map[string]godbus.Variant{}
	for k, v := range props {
		p[k] = godbus.MakeVariant(v)
	}
	f.props[unitPath(name)] = p
}

func (f *fakeBus) ListUnitsByPatterns(ctx context.Context, states, patterns []string) ([]sddbus.UnitStatus, error) {
	var out []sddbus.UnitStatus
	for _, u := range f.units {
		for _, p := range patterns {
			prefix, suffix, _ := strings.Cut(p, "*")
			if strings.HasPrefix(u.Name, prefix) && strings.HasSuffix(u.Name, suffix) &&
				(len(states) == 0 || slices.Contains(states, u.ActiveState)) {
				out = append(out, u)
				break
			}
		}
	}
	return out, nil
}

func (f *fakeBus) GetAll(ctx context.Context, reqs []sdbus.PropertiesRequest) []sdbus.PropertiesReply {
	out := make([]sdbus.PropertiesReply, len(reqs))
	for i, r := range reqs {
		p, ok := f.props[r.Path]
		if !ok {
			out[i].Err = godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownObject", Body: []any{"Unknown object " + string(r.Path)}}
			continue
		}
		out[i].Props = p
	}
	return out
}

func (f *fakeBus) Close() error { return nil }

// countingBus counts the calls made through a Bus: round trips (calls of
// ListUnitsByPatterns, batches of GetAll) and D-Bus messages.
type countingBus struct {
	Bus
	mu         sync.Mutex
	roundTrips int
	messages   int
	getAlls    []sdbus.PropertiesRequest
}

func (c *countingBus) ListUnitsByPatterns(ctx context.Context, states, patterns []string) ([]sddbus.UnitStatus, error) {
	c.mu.Lock()
	c.roundTrips++
	c.messages++
	c.mu.Unlock()
	return c.Bus.ListUnitsByPatterns(ctx, states, patterns)
}

func (c *countingBus) GetAll(ctx context.Context, reqs []sdbus.PropertiesRequest) []sdbus.PropertiesReply {
	c.mu.Lock()
	if len(reqs) > 0 {
		c.roundTrips++
	}
	c.messages += len(reqs)
	c.getAlls = append(c.getAlls, reqs...)
	c.mu.Unlock()
	return c.Bus.GetAll(ctx, reqs)
}
