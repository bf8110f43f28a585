#!/bin/sh
# virtiofsd-shim %posttrans (rpm), after an install or upgrade transaction:
# name each running system instance whose shim is the VM's end (the front),
# which `systemctl restart` moves onto the new shim (docs/live-restart.md),
# as the deb's postinst does on an upgrade; nothing is restarted here (see
# postinstall.sh for why). After a fresh install none runs.
# nfpm cannot write rpm file triggers (rpmpack#99), so a virtiofsd update
# does not reload sessions by itself on rpm systems: run
#   systemctl reload 'virtiofsd@*.service'
# for the instances that have the front (docs/live-restart.md).
[ -d /run/systemd/system ] || exit 0
systemctl list-units --plain --no-legend --state=active 'virtiofsd@*.service' 2>/dev/null |
	while read -r unit _; do
		name=${unit#virtiofsd@}
		name=${name%.service}
		if grep -qs '"front": *true' "/run/virtiofsd-shim/$name.json"; then
			echo "virtiofsd-shim: $unit runs the previous shim; systemctl restart $unit moves its VM onto the new one (docs/live-restart.md)" >&2
		fi
	done
exit 0
