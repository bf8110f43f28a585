#!/bin/sh
# virtiofsd-shim postinst (deb: configure [OLD-VERSION] | triggered PATHS |
# abort-*; rpm %post: 1 install, 2 upgrade).
#
# Tell a running systemd about the new or changed unit files. No instance is
# ever enabled, started or stopped here. Running sessions that can move go
# onto the new binaries (docs/live-restart.md); system instances only: user
# instances keep theirs until their next session.
# - deb configure with OLD-VERSION (an upgrade of this package): restart
#   each instance whose shim is the VM's end (the front, "front": true in its
#   state file), which keeps the VM. Any other session is left as it is: a
#   restart would cut its VM's share. Its next session runs the new shim.
# - deb triggered (another package changed /usr/libexec/virtiofsd: the dpkg
#   trigger in nfpm.yaml): reload each such instance, which swaps virtiofsd
#   under its VM.
# rpm restarts after its upgrade in %posttrans (posttrans.sh).
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
		systemctl try-restart "$unit" ||
			echo "virtiofsd-shim: systemctl try-restart $unit failed (journalctl -u $unit says why)" >&2
	done
fi
exit 0
