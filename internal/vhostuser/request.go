// Package vhostuser reads and writes vhost-user messages (QEMU
// docs/interop/vhost-user.rst): one table of requests, strict parsing, fds by
// SCM_RIGHTS.
package vhostuser

import "strconv"

// Request is a front-end to back-end request code (vhost-user.rst, "Front-end
// message types"), checked against rust-vmm vhost's vhost_user/message.rs.
type Request uint32

// The front-end requests, in code order.
const (
	GetFeatures         Request = 1
	SetFeatures         Request = 2
	SetOwner            Request = 3
	ResetOwner          Request = 4
	SetMemTable         Request = 5
	SetLogBase          Request = 6
	SetLogFD            Request = 7
	SetVringNum         Request = 8
	SetVringAddr        Request = 9
	SetVringBase        Request = 10
	GetVringBase        Request = 11
	SetVringKick        Request = 12
	SetVringCall        Request = 13
	SetVringErr         Request = 14
	GetProtocolFeatures Request = 15
	SetProtocolFeatures Request = 16
	GetQueueNum         Request = 17
	SetVringEnable      Request = 18
	SendRARP            Request = 19
	NetSetMTU           Request = 20
	SetBackendReqFD     Request = 21
	IOTLBMsg            Request = 22
	SetVringEndian      Request = 23
	GetConfig           Request = 24
	SetConfig           Request = 25
	CreateCryptoSession Request = 26
	CloseCryptoSession  Request = 27
	PostcopyAdvise      Request = 28
	PostcopyListen      Request = 29
	PostcopyEnd         Request = 30
	GetInflightFD       Request = 31
	SetInflightFD       Request = 32
	GPUSetSocket        Request = 33
	ResetDevice         Request = 34
	VringKick           Request = 35
	GetMaxMemSlots      Request = 36
	AddMemReg           Request = 37
	RemMemReg           Request = 38
	SetStatus           Request = 39
	GetStatus           Request = 40
	GetSharedObject     Request = 41
	SetDeviceStateFD    Request = 42
	CheckDeviceState    Request = 43
)

var requestNames = [...]string{
	GetFeatures:         "GET_FEATURES",
	SetFeatures:         "SET_FEATURES",
	SetOwner:            "SET_OWNER",
	ResetOwner:          "RESET_OWNER",
	SetMemTable:         "SET_MEM_TABLE",
	SetLogBase:          "SET_LOG_BASE",
	SetLogFD:            "SET_LOG_FD",
	SetVringNum:         "SET_VRING_NUM",
	SetVringAddr:        "SET_VRING_ADDR",
	SetVringBase:        "SET_VRING_BASE",
	GetVringBase:        "GET_VRING_BASE",
	SetVringKick:        "SET_VRING_KICK",
	SetVringCall:        "SET_VRING_CALL",
	SetVringErr:         "SET_VRING_ERR",
	GetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	SetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	GetQueueNum:         "GET_QUEUE_NUM",
	SetVringEnable:      "SET_VRING_ENABLE",
	SendRARP:            "SEND_RARP",
	NetSetMTU:           "NET_SET_MTU",
	SetBackendReqFD:     "SET_BACKEND_REQ_FD",
	IOTLBMsg:            "IOTLB_MSG",
	SetVringEndian:      "SET_VRING_ENDIAN",
	GetConfig:           "GET_CONFIG",
	SetConfig:           "SET_CONFIG",
	CreateCryptoSession: "CREATE_CRYPTO_SESSION",
	CloseCryptoSession:  "CLOSE_CRYPTO_SESSION",
	PostcopyAdvise:      "POSTCOPY_ADVISE",
	PostcopyListen:      "POSTCOPY_LISTEN",
	PostcopyEnd:         "POSTCOPY_END",
	GetInflightFD:       "GET_INFLIGHT_FD",
	SetInflightFD:       "SET_INFLIGHT_FD",
	GPUSetSocket:        "GPU_SET_SOCKET",
	ResetDevice:         "RESET_DEVICE",
	VringKick:           "VRING_KICK",
	GetMaxMemSlots:      "GET_MAX_MEM_SLOTS",
	AddMemReg:           "ADD_MEM_REG",
	RemMemReg:           "REM_MEM_REG",
	SetStatus:           "SET_STATUS",
	GetStatus:           "GET_STATUS",
	GetSharedObject:     "GET_SHARED_OBJECT",
	SetDeviceStateFD:    "SET_DEVICE_STATE_FD",
	CheckDeviceState:    "CHECK_DEVICE_STATE",
}

// String is the request's name in vhost-user.rst without the VHOST_USER_
// prefix ("GET_FEATURES"), or "REQUEST(99)" for a code it does not define.
func (r Request) String() string {
	if int(r) < len(requestNames) && requestNames[r] != "" {
		return requestNames[r]
	}
	return "REQUEST(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// Header flags (vhost-user.rst, "Header").
const (
	FlagVersion   uint32 = 0x1 // the only protocol version, in bits 0-1
	FlagReply     uint32 = 0x4 // the message answers a request
	FlagNeedReply uint32 = 0x8 // the sender wants an ack (with ProtoReplyAck)
	versionMask   uint32 = 0x3
	knownFlags    uint32 = versionMask | FlagReply | FlagNeedReply
)

// Protocol feature bits (GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES).
const (
	ProtoMQ                  uint64 = 1 << 0
	ProtoLogShmfd            uint64 = 1 << 1
	ProtoRARP                uint64 = 1 << 2
	ProtoReplyAck            uint64 = 1 << 3
	ProtoMTU                 uint64 = 1 << 4
	ProtoBackendReq          uint64 = 1 << 5
	ProtoCrossEndian         uint64 = 1 << 6
	ProtoCryptoSession       uint64 = 1 << 7
	ProtoPagefault           uint64 = 1 << 8
	ProtoConfig              uint64 = 1 << 9
	ProtoBackendSendFD       uint64 = 1 << 10
	ProtoHostNotifier        uint64 = 1 << 11
	ProtoInflightShmfd       uint64 = 1 << 12
	ProtoResetDevice         uint64 = 1 << 13
	ProtoInbandNotifications uint64 = 1 << 14
	ProtoConfigureMemSlots   uint64 = 1 << 15
	ProtoStatus              uint64 = 1 << 16
	ProtoXenMmap             uint64 = 1 << 17
	ProtoSharedObject        uint64 = 1 << 18
	ProtoDeviceState         uint64 = 1 << 19
)

// Virtio feature bits the vhost-user protocol itself looks at
// (GET_FEATURES, SET_FEATURES).
const (
	FeatureLogAll           uint64 = 1 << 26 // VHOST_F_LOG_ALL: dirty logging, a migration is running
	FeatureIndirectDesc     uint64 = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatureEventIdx         uint64 = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
	FeatureProtocolFeatures uint64 = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	FeatureVersion1         uint64 = 1 << 32 // VIRTIO_F_VERSION_1
	FeatureAccessPlatform   uint64 = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM (IOTLB)
	FeatureRingPacked       uint64 = 1 << 34 // VIRTIO_F_RING_PACKED
)
