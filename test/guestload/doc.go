// Package guestload is a file-system workload that runs inside the test
// guest on a virtiofs share and times each group of operations, for the
// data-path benchmark (test/bench, "Data path") and a short run in the
// system tests.
//
// Its program, test/guestload/cmd/guestload, is a static Go binary
// (CGO_ENABLED=0, Build) that package guest copies into the initramfs
// (guest.Spec.Files). It prints one JSON line per event on its standard
// output, the guest's serial console:
//
//	{"event":"begin","share":"auto","group":"create"}
//	{"event":"result","share":"auto","group":"create","n":2000,"unit":"file","ns":812345678,"ok":true}
//
// A "begin" line comes before a group starts and a "result" line after it
// ends, each followed by a pause (Params.Pause) in which the guest does
// nothing: a host that reads virtiofsd's CPU time when it sees each line
// gets what that group cost virtiofsd. ParseRecords reads the lines back
// out of a console's output.
//
// The groups, in order (Params sets the sizes):
//
//	create      create Files empty files in meta/
//	stat        stat each of them
//	readdir     list meta/ (n = entries listed)
//	unlink      unlink each of them
//	walk        a find-like walk (lstat of every entry) of tree/, TreeEntries entries
//	read-small  open, read 4 KiB and close each of Files files of small/
//	stream-write  write StreamMiB MiB to stream.bin in 1 MiB writes, then fsync
//	stream-read   read stream.bin back in 1 MiB reads
//
// tree/ and small/ are made by Prepare, untimed, when missing; the bench
// makes them on the host before the boot. Before each group the guest's
// caches are dropped (/proc/sys/vm/drop_caches) where it may, so that the
// reads reach virtiofsd rather than the guest's page cache.
//
// "guestload check" (Check) is another workload, for the handover tests
// (test/handovertest): rounds of operations that check their own data
// (sha256 of fsync'd writes read back, renames, readdir, files held open,
// an open deleted file) until the host's stop file appears, then one
// summary line:
//
//	{"check":"error","label":"soak","round":12,"op":"readback","error":"...","errors":0,"stopped":false}
//	{"check":"summary","label":"soak","rounds":240,"ops":2160,"errors":1,"max_ns":183000000,"max_op":"write","stopped":true,"append_size":2400}
package guestload
