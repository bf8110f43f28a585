#!/bin/sh
# copyright.sh DEB_COPYRIGHT THIRD_PARTY: write the Debian copyright file
# (machine-readable, copyright-format 1.0) and, for the rpm, the license
# texts of everything linked into the static binary: the Go standard library
# and each module that `go list -deps` finds for ./cmd/virtiofsd-shim.
set -eu
deb=$1
third=$2

# license_name FILE: the SPDX name of a license text, or fail.
license_name() {
	if grep -q 'Apache License' "$1" && grep -q 'Version 2.0' "$1"; then
		echo Apache-2.0
	elif grep -q 'Permission is hereby granted, free of charge' "$1"; then
		echo Expat
	elif grep -q 'Redistribution and use in source and binary forms' "$1"; then
		if grep -q 'Neither the name' "$1"; then echo BSD-3-Clause; else echo BSD-2-Clause; fi
	else
		echo "copyright.sh: cannot tell the license of $1: add it to packaging/copyright.sh" >&2
		return 1
	fi
}

# indent FILE: a license text as a DEP-5 continuation block.
indent() {
	sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1"
}

cat >"$deb" <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: virtiofsd-shim
Source: https://github.com/virtiofsd-shim/virtiofsd-shim

Files: *
Copyright: The virtiofsd-shim authors
License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
     http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0,
 can be found in /usr/share/common-licenses/Apache-2.0.
HEAD
printf 'Third-party code linked into /usr/libexec/virtiofsd-shim\n(a static Go binary), with its license texts.\n' >"$third"

goroot=$(go env GOROOT)
{
	printf '%s %s %s\n' "go" "$(go env GOVERSION)" "$goroot"
	go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/virtiofsd-shim | sort -u
} | while read -r path version dir; do
	lic=$dir/LICENSE
	[ -f "$lic" ] || { echo "copyright.sh: $path has no LICENSE file" >&2; exit 1; }
	name=$(license_name "$lic")
	case "$path" in
	go) files="go-stdlib/*" what="Go standard library $version" ;;
	*) files="vendor/$path/*" what="Go module $path $version" ;;
	esac
	# The first copyright line of the LICENSE (not the Apache appendix's
	# template), else of the NOTICE.
	copyright=$(cat "$lic" "$dir/NOTICE" 2>/dev/null | grep -i 'copyright (c)\|copyright [0-9]' |
		grep -v 'yyyy' | head -1 | sed -e 's/^[[:space:]]*//' -e 's/^Copyright[[:space:]]*//' -e 's/^([cC])[[:space:]]*//' || true)
	[ -n "$copyright" ] || copyright="the authors of $path"
	{
		printf '\nFiles: %s\n' "$files"
		printf 'Copyright: %s\n' "$copyright"
		printf 'Comment: %s, statically linked into /usr/libexec/virtiofsd-shim\n' "$what"
		printf 'License: %s\n' "$name"
		if [ "$name" = Apache-2.0 ]; then
			printf ' On Debian systems, the complete text of the Apache License, Version 2.0,\n can be found in /usr/share/common-licenses/Apache-2.0.\n'
		else
			indent "$lic"
		fi
	} >>"$deb"
	{
		printf '\n==== %s (%s) ====\n\n' "$what" "$name"
		cat "$lic"
		[ ! -f "$dir/NOTICE" ] || { printf '\n---- NOTICE ----\n\n'; cat "$dir/NOTICE"; }
	} >>"$third"
done
