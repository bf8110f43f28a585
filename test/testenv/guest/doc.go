// Package guest builds and boots a throwaway QEMU guest that mounts virtiofs
// shares, for end-to-end tests and the demo.
//
// Prepare assembles, once per content key, a kernel and a base initramfs from
// Debian packages: the cloud kernel (linux-image-cloud-amd64) with the virtio,
// fuse and virtiofs modules, and busybox-static as the whole userland. Run
// boots that image under QEMU (TCG, no KVM needed) with one vhost-user-fs
// device per Share, runs a busybox sh script inside the guest and returns what
// the script printed on the serial console.
//
// A script reports values with lines of the form
//
//	RESULT key=value
//
// and mounts its shares itself; Run creates the mount points /mnt/<tag>:
//
//	set -e
//	mount -t virtiofs data /mnt/data
//	echo "RESULT hello=$(cat /mnt/data/hello)"
//
// Spec.Files puts more files into the run's initramfs: a static program
// such as the data-path workload (test/guestload) for the script to run.
//
// The guest powers off when the script ends, after a sync bounded to 5 s (a
// share whose virtiofsd died never answers, and the guest's requests to it
// wait uninterruptibly); Result.ExitStatus is the script's exit status.
//
// Start is Run without the wait: it returns the running Machine, with a QMP
// client (Spec.QMP) for tests that drive QEMU, and Spec.Incoming makes a
// live migration's destination (test/migrationtest).
package guest
