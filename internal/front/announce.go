package front

import (
	"context"
	"errors"
	"fmt"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/vhostuser"
)

// Announce tells the serving virtiofsd that a swap is coming, the way
// QEMU tells it that a live migration starts: SET_FEATURES with
// VHOST_F_LOG_ALL added to the features the VM negotiated. The Rust
// virtiofsd then collects what its SAVE needs (each inode's path in
// find-paths mode, its file handle in file-handles mode) in a thread of
// its own while the VM runs on; without the announce its SAVE collects it
// inside the pause (DESIGN.md, "vhost-user front": SAVE 120-220 ms
// without, 5-14 ms with, at 5,000 inodes). It logs nothing: the front
// gives no log base, and vhost-user-backend marks pages only in a bitmap
// it was given.
//
// A Swap ends the announce (the old back end goes; the new one gets the
// VM's features), and so does Withdraw; a SET_FEATURES of the VM's own
// (a live migration starting, a driver starting again) replaces it. An
// announce of a session that is not swappable is refused as Swap would be.
func (f *Front) Announce(ctx context.Context) error {
	return f.requestAnnounce(ctx, opAnnounce)
}

// Withdraw ends an Announce that no swap followed: the serving virtiofsd
// gets the VM's features back and stops collecting. Without an announce
// in force it does nothing.
func (f *Front) Withdraw(ctx context.Context) error {
	return f.requestAnnounce(ctx, opWithdraw)
}

func (f *Front) requestAnnounce(ctx context.Context, op requestOp) error {
	req := swapRequest{ctx: ctx, op: op, done: make(chan swapResponse, 1)}
	select {
	case f.swaps <- req:
	case <-f.ended:
		return errors.New("the session has ended")
	case <-ctx.Done():
		return ctx.Err()
	}
	return (<-req.done).err
}

// runAnnounce runs an Announce or Withdraw in Run's loop, with nothing
// outstanding and the VM held.
func (f *Front) runAnnounce(ctx context.Context, op requestOp) error {
	if op == opWithdraw {
		return f.withdraw(ctx)
	}
	if err := f.checkSwappable(); err != nil {
		return err
	}
	if f.announced {
		return nil
	}
	s := f.setup
	if !s.hasFeatures {
		return nil // the driver has not started: nothing to collect yet
	}
	if err := f.be.ack(ctx, vhostuser.SetFeatures, vhostuser.U64(s.features|vhostuser.FeatureLogAll).Bytes()); err != nil {
		return fmt.Errorf("announce the swap to virtiofsd (%s with F_LOG_ALL): %w", vhostuser.SetFeatures, err)
	}
	f.announced = true
	return nil
}

// withdraw gives the serving back end the VM's features back after an
// announce.
func (f *Front) withdraw(ctx context.Context) error {
	if !f.announced {
		return nil
	}
	f.announced = false
	if err := f.be.ack(ctx, vhostuser.SetFeatures, vhostuser.U64(f.setup.features).Bytes()); err != nil {
		return fmt.Errorf("withdraw the swap's announce (%s without F_LOG_ALL): %w", vhostuser.SetFeatures, err)
	}
	return nil
}
