package vhostuser

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadMessage feeds bytes and a number of descriptors (eventfds, with
// the first byte) through a socket pair and reads messages until an error.
// Whatever arrives, a message that is returned keeps every rule of the
// table and re-encodes to the bytes it was read from, an error is io.EOF,
// io.ErrUnexpectedEOF or a *ProtocolError, and no descriptor is left open.
func FuzzReadMessage(f *testing.F) {
	f.Add(raw(GetFeatures, FlagVersion, 0, nil), uint8(0))
	f.Add(raw(SetMemTable, FlagVersion|FlagNeedReply, 40, MemTable{Regions: []MemRegion{{Size: 4096}}}.Bytes()), uint8(1))
	f.Add(raw(SetVringKick, FlagVersion, 8, VringFD{Index: 1}.Bytes()), uint8(1))
	f.Add(raw(SetVringCall, FlagVersion, 8, VringFD{Index: 1, NoFD: true}.Bytes()), uint8(1))
	f.Add(raw(SetDeviceStateFD, FlagVersion, 8, DeviceStateFD{Direction: DirectionLoad}.Bytes()), uint8(1))
	f.Add(raw(GetVringBase, FlagVersion|FlagReply, 8, VringState{Index: 1, Num: 77}.Bytes()), uint8(0))
	f.Add(raw(SetConfig, FlagVersion, 14, Config{Data: []byte("hi")}.Bytes()), uint8(0))
	f.Add(raw(99, FlagVersion, 3, []byte{1, 2, 3}), uint8(2))
	f.Add(raw(SetOwner, FlagVersion, MaxPayload+1, nil), uint8(0))
	f.Add(append(raw(SetOwner, FlagVersion, 0, nil), raw(SetFeatures, FlagVersion, 8, U64(1).Bytes())...), uint8(0))
	f.Add(raw(SetFeatures, FlagVersion, 8, []byte{1, 2}), uint8(0))
	f.Add(raw(AddMemReg, FlagVersion|FlagNeedReply, 40, SingleMemRegion{MemRegion{Size: 1}}.Bytes()), uint8(MaxFDs+1))
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8) {
		if len(data) > 3*MaxPayload {
			return
		}
		n := int(nfds) % (MaxFDs + 2)
		if len(data) == 0 {
			n = 0
		}
		c, before := fed(t, data, n)
		var read []byte
		var got []*Message
		for {
			m, err := c.ReadMessage()
			if err != nil {
				var perr *ProtocolError
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &perr) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				break
			}
			got = append(got, m)
			if int(m.Size) != len(m.Payload) || len(m.Payload) > MaxPayload || len(m.Files) > MaxFDs {
				t.Fatalf("message out of limits: %s size %d", m, m.Size)
			}
			if err := checkMessage(m); err != nil {
				t.Fatalf("returned a message that breaks a rule: %v", err)
			}
			read = append(m.Header.append(read), m.Payload...)
		}
		if !bytes.HasPrefix(data, read) {
			t.Fatalf("messages re-encode to %x, not a prefix of %x", read, data)
		}
		for _, m := range got {
			m.Close()
		}
		if after := openFDs(t); after != before {
			t.Fatalf("%d descriptors left open", after-before)
		}
	})
}
