#!/bin/sh
# virtiofsd-shim postinst (deb: configure [OLD-VERSION] | triggered PATHS |
# abort-*; rpm %post: 1 install, 2 upgrade).
#
# Tell a running systemd about the new or changed unit files. No instance is
# ever enabled, started or stopped here. Running sessions that can move go
# onto the new binaries (docs/live-restart.md); system instances only: user
# instances keep theirs until their next session.
# - deb configure with OLD-VERSION (an upgrade of this package): no session
#   is restarted. A restart keeps a VM only when its session can be saved,
#   which the state file does not tell yet (a session that negotiated no
#   state transfer, or passed on a request the front does not know, would be
#   cut); so the instances whose shim is the VM's end ("front": true in their
#   state file) are named, for the admin to `systemctl restart` them.
# - deb triggered (another package changed /usr/libexec/virtiofsd: the dpkg
#   trigger in nfpm.yaml): reload each such instance, which swaps virtiofsd
#   under its VM.
# rpm names them after its upgrade in %posttrans (posttrans.sh).
set -e

# movable prints the running system instances whose session has the front.
movable() {
	systemctl list-units --plain --no-legend --state=active 'virtiofsd@*.service' 2>/dev/null |
		while read -r unit _; do
			name=${unit#virtiofsd@}
			name=${name%.service}
			if grep -qs '"front": *true' "/run/virtiofsd-shim/$name.json"; then
				echo "$unit"
			fi
		done
}

[ -d /run/systemd/system ] || exit 0

case "$1" in
triggered)
	for unit in $(movable); do
		systemctl reload "$unit" ||
			echo "virtiofsd-shim: systemctl reload $unit failed (journalctl -u $unit says why); its session keeps the virtiofsd it runs" >&2
	done
	exit 0
	;;
esac

systemctl daemon-reload || echo "virtiofsd-shim: systemctl daemon-reload failed; run it by hand" >&2
if [ "$1" = configure ] && [ -n "$2" ]; then
	for unit in $(movable); do
		echo "virtiofsd-shim: $unit runs the previous shim; systemctl restart $unit moves its VM onto the new one (docs/live-restart.md)" >&2
	done
fi
exit 0
