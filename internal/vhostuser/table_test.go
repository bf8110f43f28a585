package vhostuser

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// describe is one row of the table in words, for the golden test.
func describe(r Request) string {
	s, _ := Lookup(r)
	reply := map[ReplyKind]string{ReplyAck: "ack", ReplyAlways: "always", ReplyIfLogShmfd: "if LOG_SHMFD"}[s.Reply]
	return fmt.Sprintf("%s: %s bytes, %s fds; reply %s: %s bytes, %s fds", r, span(s.Size), span(s.FDs), reply, span(s.ReplySize), span(s.ReplyFDs))
}

func span(r Range) string {
	if r.Min == r.Max {
		return fmt.Sprint(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// TestTableSaysWhatTheSpecificationSays pins every row of the table, as
// read from vhost-user.rst and rust-vmm's message.rs: a change to the table
// must be a change here too.
func TestTableSaysWhatTheSpecificationSays(t *testing.T) {
	want := []string{
		"GET_FEATURES: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"SET_FEATURES: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_OWNER: 0 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"RESET_OWNER: 0 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_MEM_TABLE: 40-264 bytes, 1-8 fds; reply ack: 8 bytes, 0 fds",
		"SET_LOG_BASE: 16 bytes, 0-1 fds; reply if LOG_SHMFD: 0-16 bytes, 0 fds",
		"SET_LOG_FD: 0 bytes, 1 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_NUM: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_ADDR: 40 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_BASE: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_VRING_BASE: 8 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"SET_VRING_KICK: 8 bytes, 0-1 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_CALL: 8 bytes, 0-1 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_ERR: 8 bytes, 0-1 fds; reply ack: 8 bytes, 0 fds",
		"GET_PROTOCOL_FEATURES: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"SET_PROTOCOL_FEATURES: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_QUEUE_NUM: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"SET_VRING_ENABLE: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SEND_RARP: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"NET_SET_MTU: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_BACKEND_REQ_FD: 0 bytes, 1 fds; reply ack: 8 bytes, 0 fds",
		"IOTLB_MSG: 32 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"SET_VRING_ENDIAN: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_CONFIG: 13-4096 bytes, 0 fds; reply always: 13-4096 bytes, 0 fds",
		"SET_CONFIG: 13-4096 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"CREATE_CRYPTO_SESSION: 8-4096 bytes, 0 fds; reply always: 8-4096 bytes, 0 fds",
		"CLOSE_CRYPTO_SESSION: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"POSTCOPY_ADVISE: 0 bytes, 0 fds; reply always: 0-8 bytes, 1 fds",
		"POSTCOPY_LISTEN: 0 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"POSTCOPY_END: 0 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_INFLIGHT_FD: 24 bytes, 0 fds; reply always: 24 bytes, 1 fds",
		"SET_INFLIGHT_FD: 24 bytes, 1 fds; reply ack: 8 bytes, 0 fds",
		"GPU_SET_SOCKET: 0 bytes, 1 fds; reply ack: 8 bytes, 0 fds",
		"RESET_DEVICE: 0 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"VRING_KICK: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_MAX_MEM_SLOTS: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"ADD_MEM_REG: 40 bytes, 1 fds; reply ack: 8 bytes, 0 fds",
		"REM_MEM_REG: 40 bytes, 0-1 fds; reply ack: 8 bytes, 0 fds",
		"SET_STATUS: 8 bytes, 0 fds; reply ack: 8 bytes, 0 fds",
		"GET_STATUS: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
		"GET_SHARED_OBJECT: 16 bytes, 0 fds; reply always: 0-8 bytes, 0-1 fds",
		"SET_DEVICE_STATE_FD: 8 bytes, 1 fds; reply always: 8 bytes, 0-1 fds",
		"CHECK_DEVICE_STATE: 0 bytes, 0 fds; reply always: 8 bytes, 0 fds",
	}
	var got []string
	for r := Request(1); r <= CheckDeviceState; r++ {
		got = append(got, describe(r))
	}
	assert.Equal(t, want, got)
}
