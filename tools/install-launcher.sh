#!/bin/sh
# Make `mount -t fuse.fuse-passthrough` and fstab lines find this checkout's program: mount(8) runs mount.fuse3
# without a PATH, so it looks in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin. As root, link
# LINK -> TARGET when nothing is at LINK (a dangling link is replaced); anything else there is left alone.
#   tools/install-launcher.sh TARGET LINK      (make run / make test: .venv/bin/fuse-passthrough /usr/local/bin/...)
set -eu
target=${1:?usage: install-launcher.sh TARGET LINK}
link=${2:?usage: install-launcher.sh TARGET LINK}
if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
  exit 0  # already this checkout's
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-launcher: not root, so $link is not installed; for mount(8) and fstab see README \"mount(8), fstab and systemd\""
  exit 0
fi
if [ -e "$link" ]; then
  what=$( [ -L "$link" ] && echo "a link to $(readlink "$link")" || echo "a file" )
  echo "install-launcher: $link is $what: left alone (mount(8) and fstab run that one)"
  exit 0
fi
if [ -L "$link" ]; then
  echo "install-launcher: replacing the dangling link $link -> $(readlink "$link")"
  rm -f "$link"
fi
mkdir -p "$(dirname "$link")"
ln -s "$target" "$link"
echo "install-launcher: $link -> $target (so that mount -t fuse.fuse-passthrough and fstab find it)"
