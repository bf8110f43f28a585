package pkgtest_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/state"
	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// qemuProtocol are the protocol features QEMU 10 sets for vhost-user-fs
// (DESIGN.md, "vhost-user front"), of which the VM takes what virtiofsd
// offers.
const qemuProtocol uint64 = 0x8a42b

// qemuFeatures are the features QEMU 10 acks for vhost-user-fs when the
// guest's driver starts (SET_FEATURES).
const qemuFeatures uint64 = 0x170000000

// movableVM connects to an instance's socket as a VM and negotiates as
// QEMU's realize does, then acks features as the guest's driver does,
// without memory or rings: protocol features (REPLY_ACK among them),
// owner, features. The front then has what it needs
// to save the session, so the shim publishes it as movable.
func movableVM(path string, timeout time.Duration) (*fakeVM, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	conn := vhostuser.NewConn(c.(*net.UnixConn))
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		conn.Close()
		return nil, err
	}
	defer c.SetDeadline(time.Time{})
	u64 := func(req vhostuser.Request) (uint64, error) {
		r, err := conn.Call(req, nil, nil, false)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", req, err)
		}
		defer r.Close()
		v, err := vhostuser.ParseU64(r.Payload)
		return uint64(v), err
	}
	fail := func(err error) (*fakeVM, error) {
		conn.Close()
		return nil, err
	}
	features, err := u64(vhostuser.GetFeatures)
	if err != nil {
		return fail(err)
	}
	if features&vhostuser.FeatureProtocolFeatures == 0 {
		return fail(fmt.Errorf("virtiofsd offers no protocol features (%#x)", features))
	}
	offered, err := u64(vhostuser.GetProtocolFeatures)
	if err != nil {
		return fail(err)
	}
	proto := offered & qemuProtocol
	if _, err := conn.Call(vhostuser.SetProtocolFeatures, vhostuser.U64(proto).Bytes(), nil, false); err != nil {
		return fail(err)
	}
	conn.SetProtocolFeatures(proto)
	if _, err := conn.Call(vhostuser.SetOwner, nil, nil, false); err != nil {
		return fail(err)
	}
	if _, err := u64(vhostuser.GetFeatures); err != nil {
		return fail(err)
	}
	// What the guest's driver acks first, before it sets up memory and
	// rings.
	if _, err := conn.Call(vhostuser.SetFeatures, vhostuser.U64(features&qemuFeatures).Bytes(), nil, false); err != nil {
		return fail(err)
	}
	return &fakeVM{conn: conn, raw: c}, nil
}

// fakeVM is the VM's end of a session movableVM negotiated.
type fakeVM struct {
	conn *vhostuser.Conn
	raw  net.Conn
}

func (v *fakeVM) Close() error { return v.conn.Close() }

// answers tells whether the session still answers GET_FEATURES.
func (v *fakeVM) answers() error {
	if err := v.raw.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	defer v.raw.SetDeadline(time.Time{})
	r, err := v.conn.Call(vhostuser.GetFeatures, nil, nil, false)
	if err != nil {
		return err
	}
	return r.Close()
}

// stateOf reads an instance's state file in the box, once its shim has
// written what ok wants.
func (m machine) stateOf(ctx context.Context, inst string, ok func(*state.State) bool) *state.State {
	m.t.Helper()
	var st *state.State
	require.Eventually(m.t, func() bool {
		var err error
		st, err = state.Read(m.Path(state.Path(shimbox.RuntimeDir(), inst)))
		return err == nil && st != nil && ok(st)
	}, 20*time.Second, 50*time.Millisecond, "the state of %s", inst)
	return st
}

// live is the state of the running service's shim.
func (m machine) live(ctx context.Context, inst string) func(*state.State) bool {
	return func(st *state.State) bool {
		pid := m.show(ctx, "virtiofsd@"+inst+".service", "MainPID")
		return pid != "0" && fmt.Sprint(st.ShimPID) == strings.TrimSpace(pid)
	}
}
