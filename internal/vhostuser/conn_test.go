package vhostuser

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// validPayload is a payload of size bytes that a request's content rules
// accept when it comes with nfds descriptors.
func validPayload(r Request, size, nfds int) []byte {
	p := make([]byte, size)
	switch r {
	case SetMemTable:
		if size >= 4 {
			le.PutUint32(p, uint32((size-memTableHeader)/memRegionSize))
		}
	case SetVringKick, SetVringCall, SetVringErr:
		if nfds == 0 && size >= 2 {
			p[1] = 1 // bit 8: no fd
		}
	case GetConfig, SetConfig:
		if size >= configHeader {
			le.PutUint32(p[4:], uint32(size-configHeader))
		}
	}
	return p
}

// readOne sends b with n copies of an eventfd and reads it back. It
// reports how many descriptors the process holds beyond those before the
// send: none once a refused message has been dealt with.
func readOne(t *testing.T, b []byte, n int) (*Message, int, error) {
	t.Helper()
	c, before := fed(t, b, n)
	m, err := c.ReadMessage()
	leaked := openFDs(t) - before
	if m != nil {
		leaked -= len(m.Files)
		t.Cleanup(func() { m.Close() })
	}
	return m, leaked, err
}

func requireRefused(t *testing.T, err error, req Request, ruleHas string) {
	t.Helper()
	var perr *ProtocolError
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, req, perr.Request)
	assert.Contains(t, perr.Rule, ruleHas)
	assert.Contains(t, perr.Error(), req.String())
}

func TestEveryKnownRequestIsAcceptedAtTheEdgesOfItsRules(t *testing.T) {
	for r := Request(1); r <= CheckDeviceState; r++ {
		s, ok := Lookup(r)
		require.True(t, ok, r)
		for _, c := range []struct{ size, fds int }{{s.Size.Min, s.FDs.Min}, {s.Size.Max, s.FDs.Max}} {
			t.Run(fmt.Sprintf("%s/%d bytes/%d fds", r, c.size, c.fds), func(t *testing.T) {
				p := validPayload(r, c.size, c.fds)
				m, leaked, err := readOne(t, raw(r, FlagVersion|FlagNeedReply, uint32(len(p)), p), c.fds)
				require.NoError(t, err)
				assert.Zero(t, leaked)
				assert.Equal(t, r, m.Request)
				assert.Equal(t, FlagVersion|FlagNeedReply, m.Flags)
				assert.Equal(t, uint32(c.size), m.Size)
				assert.Equal(t, p, m.Payload)
				assert.Len(t, m.Files, c.fds)
				assert.True(t, m.NeedsReply())
				assert.False(t, m.IsReply())
			})
		}
	}
}

func TestEveryKnownRequestIsRefusedJustPastItsRules(t *testing.T) {
	for r := Request(1); r <= CheckDeviceState; r++ {
		s, _ := Lookup(r)
		type tc struct {
			size, fds int
			rule      string
		}
		cases := []tc{{s.Size.Max + 1, s.FDs.Max, "-byte payload"}, {s.Size.Max, s.FDs.Max + 1, "fds"}}
		if s.Size.Min > 0 {
			cases = append(cases, tc{s.Size.Min - 1, s.FDs.Min, "-byte payload"})
		}
		if s.FDs.Min > 0 {
			cases = append(cases, tc{s.Size.Min, s.FDs.Min - 1, "fds"})
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%d bytes/%d fds", r, c.size, c.fds), func(t *testing.T) {
				p := validPayload(r, c.size, c.fds)
				m, leaked, err := readOne(t, raw(r, FlagVersion, uint32(len(p)), p), c.fds)
				assert.Nil(t, m)
				requireRefused(t, err, r, c.rule)
				assert.Zero(t, leaked, "descriptors of a refused message must be closed")
			})
		}
	}
}

func TestEveryKnownReplyIsCheckedAgainstItsReplyRules(t *testing.T) {
	for r := Request(1); r <= CheckDeviceState; r++ {
		s, _ := Lookup(r)
		t.Run(r.String(), func(t *testing.T) {
			for _, c := range []struct{ size, fds int }{{s.ReplySize.Min, s.ReplyFDs.Min}, {s.ReplySize.Max, s.ReplyFDs.Max}} {
				m, _, err := readOne(t, raw(r, FlagVersion|FlagReply, uint32(c.size), validPayload(r, c.size, c.fds)), c.fds)
				require.NoError(t, err, "%d bytes %d fds", c.size, c.fds)
				assert.True(t, m.IsReply())
				assert.False(t, m.NeedsReply())
				assert.Len(t, m.Files, c.fds)
			}
			bad := []struct {
				size, fds int
				rule      string
			}{{s.ReplySize.Max + 1, s.ReplyFDs.Max, "reply has a"}, {s.ReplySize.Max, s.ReplyFDs.Max + 1, "reply carries"}}
			if s.ReplySize.Min > 0 {
				bad = append(bad, struct {
					size, fds int
					rule      string
				}{s.ReplySize.Min - 1, s.ReplyFDs.Min, "reply has a"})
			}
			if s.ReplyFDs.Min > 0 {
				bad = append(bad, struct {
					size, fds int
					rule      string
				}{s.ReplySize.Min, s.ReplyFDs.Min - 1, "reply carries"})
			}
			for _, c := range bad {
				if c.size > MaxPayload {
					c.rule = "at most 4096 allowed"
				}
				m, leaked, err := readOne(t, raw(r, FlagVersion|FlagReply, uint32(c.size), make([]byte, c.size)), c.fds)
				assert.Nil(t, m)
				requireRefused(t, err, r, c.rule)
				assert.Zero(t, leaked, "descriptors of a refused reply must be closed")
			}
		})
	}
}
