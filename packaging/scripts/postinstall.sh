#!/bin/sh
# virtiofsd-shim postinst (deb: configure [OLD-VERSION] | triggered PATHS |
# abort-*; rpm %post: 1 install, 2 upgrade).
#
# Tell a running systemd about the new or changed unit files. No instance is
# ever enabled, started or stopped here. Running sessions that can move go
# onto the new binaries (docs/live-restart.md); system instances only: user
# instances keep theirs until their next session (list --user says so).
# Which sessions move is the shim's own judgement, published in each
# instance's state (movable) and read by `virtiofsd-shim upgrade-plan`,
# which also says on stderr which it leaves, and why.
# - deb configure with OLD-VERSION (an upgrade of this package): restart
#   each movable session: a new shim and virtiofsd, the VM kept. The others
#   (C virtiofsd, FRONT=no, no state transfer negotiated, an unknown
#   request passed on, a thread pool, a live migration) would be cut: they
#   keep the previous shim until their VM disconnects.
# - deb triggered (another package changed /usr/libexec/virtiofsd: the dpkg
#   trigger in nfpm.yaml): reload each movable session, which swaps
#   virtiofsd under its VM.
# rpm moves them after its upgrade in %posttrans (posttrans.sh).
set -e

shim=/usr/libexec/virtiofsd-shim

# movable prints the running system instances an upgrade ($1: package or
# virtiofsd) moves, one unit a line; nothing when that cannot be told.
movable() {
	"$shim" upgrade-plan --for="$1" ||
		echo "virtiofsd-shim: could not tell which sessions can move (see above), so none was touched" >&2
}

[ -d /run/systemd/system ] || exit 0

case "$1" in
triggered)
	for unit in $(movable virtiofsd); do
		systemctl reload "$unit" ||
			echo "virtiofsd-shim: systemctl reload $unit failed (journalctl -u $unit says why); its session keeps the virtiofsd it runs" >&2
	done
	exit 0
	;;
esac

systemctl daemon-reload || echo "virtiofsd-shim: systemctl daemon-reload failed; run it by hand" >&2
if [ "$1" = configure ] && [ -n "$2" ]; then
	for unit in $(movable package); do
		echo "virtiofsd-shim: restarting $unit: its session moves onto the new shim, the VM kept (docs/live-restart.md)" >&2
		systemctl restart "$unit" ||
			echo "virtiofsd-shim: systemctl restart $unit failed (journalctl -u $unit says why)" >&2
	done
fi
exit 0
