#!/bin/sh
# virtiofsd-shim %posttrans (rpm), after an install or upgrade transaction:
# restart each running system instance whose session can move (the shim
# says so in its state; `virtiofsd-shim upgrade-plan` reads it and names the
# others, with the reason), as the deb's postinst does on an upgrade: a new
# shim and virtiofsd, the VM kept (docs/live-restart.md). After a fresh
# install none runs.
# nfpm cannot write rpm file triggers (rpmpack#99), so a virtiofsd update
# does not reload sessions by itself on rpm systems: run
#   for unit in $(/usr/libexec/virtiofsd-shim upgrade-plan --for=virtiofsd); do systemctl reload "$unit"; done
# (docs/live-restart.md).
[ -d /run/systemd/system ] || exit 0
units=$(/usr/libexec/virtiofsd-shim upgrade-plan --for=package) ||
	echo "virtiofsd-shim: could not tell which sessions can move (see above), so none was touched" >&2
for unit in $units; do
	echo "virtiofsd-shim: restarting $unit: its session moves onto the new shim, the VM kept (docs/live-restart.md)" >&2
	systemctl restart "$unit" ||
		echo "virtiofsd-shim: systemctl restart $unit failed (journalctl -u $unit says why)" >&2
done
exit 0
