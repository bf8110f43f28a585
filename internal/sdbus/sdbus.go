// Package sdbus is the shim's connection to a service manager's D-Bus API
// (org.freedesktop.systemd1), system or user, which list and the units'
// hooks share: where to reach it, and why it could not be reached.
package sdbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

// PropertiesRequest names an object and an interface for
// org.freedesktop.DBus.Properties.GetAll. An empty Interface asks systemd
// for the properties of all the object's interfaces (Unit and Service, say)
// in one call.
type PropertiesRequest struct {
	Path      godbus.ObjectPath
	Interface string
}

// PropertiesReply is the answer to one PropertiesRequest.
type PropertiesReply struct {
	Props map[string]godbus.Variant
	Err   error
}

// UnreachableError says that systemd could not be reached on any of the
// addresses tried, and why.
type UnreachableError struct {
	Tried []Attempt
	// Scope is whose manager was sought; it picks the advice.
	Scope config.Scope
}

// Attempt is one way of reaching systemd that failed.
type Attempt struct {
	Address string
	Err     error
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	b.WriteString("cannot reach systemd's D-Bus API: ")
	for i, a := range e.Tried {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", a.Address, a.Err)
	}
	if e.Scope == config.User {
		b.WriteString(": list --user asks your own systemd user manager: run it as the user in a login session " +
			"(or with XDG_RUNTIME_DIR=/run/user/$(id -u) set), and check that the manager runs: systemctl --user status " +
			"(loginctl enable-linger $USER keeps it running without a session)")
		return b.String()
	}
	b.WriteString(": list asks systemd, so run it on a host booted with systemd, as root (or as a user allowed on the system bus)")
	if comm, err := os.ReadFile("/proc/1/comm"); err == nil {
		if c := strings.TrimSpace(string(comm)); c != "systemd" {
			fmt.Fprintf(&b, "; here PID 1 is %q, not systemd", c)
		}
	}
	return b.String()
}

// Unwrap returns the errors of the attempts.
func (e *UnreachableError) Unwrap() []error {
	errs := make([]error, len(e.Tried))
	for i, a := range e.Tried {
		errs[i] = a.Err
	}
	return errs
}

// Connect reaches the service manager of scope read-only. For System: as
// root over its private socket (/run/systemd/private), otherwise, or when
// that fails, over the system bus (DBUS_SYSTEM_BUS_ADDRESS, else
// /run/dbus/system_bus_socket); see config.Scope.PrivateBus and Bus. For User, the user's own manager over its private socket
// ($XDG_RUNTIME_DIR/systemd/private, which systemctl --user uses too), or
// when that fails over the session bus (DBUS_SESSION_BUS_ADDRESS, else
// $XDG_RUNTIME_DIR/bus). It fails with an *UnreachableError.
func Connect(ctx context.Context, scope config.Scope, env config.Env) (*Conn, error) {
	private, err := scope.PrivateBus(env)
	if err != nil {
		return nil, &UnreachableError{Tried: []Attempt{{scope.String() + " manager", err}}, Scope: scope}
	}
	if scope == config.System && os.Geteuid() != 0 {
		private = "" // root's alone
	}
	bus, err := scope.Bus(env)
	if err != nil {
		return nil, &UnreachableError{Tried: []Attempt{{scope.String() + " bus", err}}, Scope: scope}
	}
	name := "system bus "
	if scope == config.User {
		name = "session bus "
	}
	b, err := connect(ctx, private, bus, name)
	var ue *UnreachableError
	if errors.As(err, &ue) {
		ue.Scope = scope
	}
	return b, err
}

// ConnectTo is Connect with other addresses: private is the path of
// a manager's private socket ("" to skip it), system a D-Bus address of the
// bus the manager is on ("" for the system scope's, config.Scope.Bus).
func ConnectTo(ctx context.Context, private, system string) (*Conn, error) {
	return connect(ctx, private, system, "system bus ")
}

// connect is ConnectTo with the bus named busName in errors.
func connect(ctx context.Context, private, system, busName string) (*Conn, error) {
	var tried []Attempt
	if private != "" {
		b, err := Dial(func() (*godbus.Conn, error) {
			return authConn(godbus.Dial("unix:path="+private, godbus.WithContext(ctx)))
		})
		if err == nil {
			return b, nil
		}
		tried = append(tried, Attempt{private, err})
	}
	addr := system
	if addr == "" {
		addr, _ = config.System.Bus(os.Getenv) // never fails
	}
	b, err := Dial(func() (*godbus.Conn, error) {
		c, err := authConn(godbus.Dial(addr, godbus.WithContext(ctx)))
		if err != nil {
			return nil, err
		}
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, fmt.Errorf("hello: %w", err)
		}
		return c, nil
	})
	if err == nil {
		return b, nil
	}
	return nil, &UnreachableError{Tried: append(tried, Attempt{busName + addr, err})}
}

// authConn authenticates as go-systemd does: EXTERNAL with the numeric uid.
func authConn(c *godbus.Conn, err error) (*godbus.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return c, nil
}

// Conn is a connection to systemd: go-systemd's dbus.Conn for the Manager
// calls, and one of its godbus connections for the pipelined GetAll calls.
type Conn struct {
	conn *sddbus.Conn
	raw  *godbus.Conn
}

// Dial makes a Conn from a function returning fresh, authenticated
// (and, on a bus, Hello'd) connections, as go-systemd's dbus.NewConnection
// takes; it is called twice. In tests: Dial(box.SystemdBus).
func Dial(dial func() (*godbus.Conn, error)) (*Conn, error) {
	var (
		mu    sync.Mutex
		conns []*godbus.Conn
	)
	conn, err := sddbus.NewConnection(func() (*godbus.Conn, error) {
		c, err := dial()
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	})
	if err != nil {
		return nil, err
	}
	if len(conns) == 0 {
		conn.Close()
		return nil, errors.New("go-systemd made no connection")
	}
	// Either connection can carry method calls: go-systemd uses the first
	// for calls and the second for signals.
	return &Conn{conn: conn, raw: conns[0]}, nil
}

// ListUnitsByPatterns is systemd's Manager.ListUnitsByPatterns: the units
// loaded in memory whose names match one of patterns (any state when
// states is empty). One D-Bus call.
func (b *Conn) ListUnitsByPatterns(ctx context.Context, states, patterns []string) ([]sddbus.UnitStatus, error) {
	return b.conn.ListUnitsByPatternsContext(ctx, states, patterns)
}

// GetAll asks for the properties of every object in reqs at once and waits
// for all the replies: it sends every GetAll before reading any reply, so
// the wait is about one round trip plus systemd's work. It returns one
// reply per request, in order.
func (b *Conn) GetAll(ctx context.Context, reqs []PropertiesRequest) []PropertiesReply {
	replies := make([]PropertiesReply, len(reqs))
	if len(reqs) == 0 {
		return replies
	}
	done := make(chan *godbus.Call, len(reqs))
	index := make(map[*godbus.Call]int, len(reqs))
	for i, r := range reqs {
		call := b.raw.Object("org.freedesktop.systemd1", r.Path).
			GoWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, done, r.Interface)
		index[call] = i
	}
	for range reqs {
		call := <-done
		i := index[call]
		if call.Err != nil {
			replies[i].Err = call.Err
			continue
		}
		replies[i].Err = call.Store(&replies[i].Props)
	}
	return replies
}

// QueuedJobType returns the type of the job systemd runs or has queued for
// unit ("restart", "stop", "start", ...), or "" when it has none. One D-Bus
// call (Manager.ListJobs). A `systemctl restart` or `try-restart` of an
// active unit shows as "restart" while the unit stops; a `systemctl stop`
// as "stop".
func (b *Conn) QueuedJobType(ctx context.Context, unit string) (string, error) {
	jobs, err := b.conn.ListJobsContext(ctx)
	if err != nil {
		return "", fmt.Errorf("list systemd's jobs: %w", err)
	}
	for _, j := range jobs {
		if j.Unit == unit {
			return j.JobType, nil
		}
	}
	return "", nil
}

// Manager is the connection's go-systemd client, for the calls the units'
// hooks make (release, standby, resume: KillUnit, StartUnit, StopUnit,
// ListJobs).
func (b *Conn) Manager() *sddbus.Conn { return b.conn }

// Close ends the connection.
func (b *Conn) Close() error {
	b.conn.Close()
	return nil
}
