#!/bin/sh
# install-if-absent.sh SRC DIR NAME MODE: install SRC as DIR/NAME (under
# $DESTDIR) unless a file is there already, so that `meson install` never
# overwrites a configuration an operator has edited.
set -eu
src=$1 dir=${DESTDIR:-}$2 name=$3 mode=$4
if [ -e "$dir/$name" ] || [ -L "$dir/$name" ]; then
	echo "fleetgate: keeping $dir/$name (already there)" >&2
	exit 0
fi
install -d -m 0755 "$dir"
install -m "$mode" "$src" "$dir/$name"
echo "Installing $src to $dir/$name"
