package vhostuser

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	protocol "github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/testdir"
)

func TestActivatedCommandGetsTheSocketAsSystemdPassesIt(t *testing.T) {
	dir := testdir.Short(t)
	sock, err := Listen(filepath.Join(dir, "vm.sock"))
	require.NoError(t, err)
	defer sock.Close()

	out, err := Activated(sock, "/bin/sh", "-c",
		`echo "$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES $(readlink /proc/self/fd/3)"`).Output()
	require.NoError(t, err)
	f := strings.Fields(string(out))
	require.Len(t, f, 5, string(out))
	assert.Equal(t, f[1], f[0], "LISTEN_PID is the pid of the program itself")
	assert.Equal(t, []string{"1", "vhost-user"}, f[2:4])
	assert.True(t, strings.HasPrefix(f[4], "socket:"), "fd 3 is the socket: %s", f[4])
	_, err = os.Stat(filepath.Join(dir, "vm.sock"))
	assert.NoError(t, err, "the socket file stays, as systemd's does")
}

func TestNotifySocketHandsOverEachDatagramInOrder(t *testing.T) {
	n, err := ListenNotify(filepath.Join(testdir.Short(t), "notify"))
	require.NoError(t, err)
	c, err := net.Dial("unixgram", n.Path)
	require.NoError(t, err)
	defer c.Close()
	for _, s := range []string{"READY=1\nSTATUS=x", "STOPPING=1"} {
		_, err := c.Write([]byte(s))
		require.NoError(t, err)
	}
	assert.Equal(t, "READY=1\nSTATUS=x", (<-n.C).State)
	d := <-n.C
	assert.Equal(t, "STOPPING=1", d.State)
	assert.WithinDuration(t, time.Now(), d.At, 10*time.Second)
	require.NoError(t, n.Close())
	_, open := <-n.C
	assert.False(t, open, "C is closed after Close")
}

func TestProbeWantsAVhostUserReply(t *testing.T) {
	path := filepath.Join(testdir.Short(t), "vm.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	serve := func(flags uint32) {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var req [12]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		var reply [20]byte
		binary.LittleEndian.PutUint32(reply[0:], binary.LittleEndian.Uint32(req[0:]))
		binary.LittleEndian.PutUint32(reply[4:], flags)
		binary.LittleEndian.PutUint32(reply[8:], 8)
		c.Write(reply[:])
		io.Copy(io.Discard, c)
	}

	go serve(0x5)
	c, err := Probe(path, 5*time.Second)
	require.NoError(t, err, "a live backend")
	c.Close()

	go serve(0x1) // a request where the reply was due
	_, err = Probe(path, 5*time.Second)
	var perr *protocol.ProtocolError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, protocol.GetFeatures, perr.Request)
}
