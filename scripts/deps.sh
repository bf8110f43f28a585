#!/usr/bin/env bash
# deps.sh: install, on a fresh Debian 12 machine as root, what building and
# testing virtiofsd-shim needs, and only what is missing. Idempotent.
set -euo pipefail

packages=(
	qemu-system-common       # the C virtiofsd, /usr/lib/qemu/virtiofsd
	qemu-system-x86          # the test guest, under TCG
	linux-image-cloud-amd64  # the test guest's kernel (virtio, fuse, virtiofs modules)
	busybox-static           # the test guest's userland
	cpio
	zstd                     # test/testenv/guest: kernel modules stored as .ko.zst (and its test's .zst case)
	systemd                  # run as PID 1 of private namespaces by the tests and the demo
	dbus
	util-linux               # nsenter, unshare
	uidmap                   # newuidmap, newgidmap: rootless instances with UID_MAP=/GID_MAP= (test/systemtest)
	procps                   # pgrep
	lintian rpm man-db shellcheck  # package checks
	git make gcc             # gcc: go test -race needs cgo
	mmdebstrap               # builds the Debian 13 tree of the second platform leg (cached under /var/cache/virtiofsd-shim)
	debian-archive-keyring   # ... from Debian's registry, whose trixie suite it verifies
	libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu  # the libvirt tests (test/libvirttest)
	apparmor                 # apparmor_parser: the AppArmor abstraction compiles against libvirt's profiles
)
need=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps.sh: missing packages (${need[*]}) and not root: run as root, or apt-get install them" >&2
		exit 1
	fi
	echo "deps.sh: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Go: go.mod asks for Go 1.26; these machines have it in /usr/local/go.
# Debian 12's golang-go (1.19) is too old and predates GOTOOLCHAIN, so it
# cannot stand in.
if ! PATH=/usr/local/go/bin:$PATH command -v go >/dev/null; then
	echo "deps.sh: no go command: install Go 1.26 or later into /usr/local/go (Debian 12's golang-go is too old)" >&2
	exit 1
fi
