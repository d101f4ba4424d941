#!/usr/bin/env bash
# Build libfuse 3.17 (Debian 13's version, from Debian's own source tarball, fetched from the Debian mirror this
# machine's apt is configured with) into DEST, for testing and
# benchmarking kernel passthrough on a machine whose system libfuse is older (Debian 12 has 3.14).
# Only the library is built (and its public headers copied, for the low-level binding's layout tests); mounting as
# root needs no fusermount3. Idempotent: does nothing when DEST is built.
#   tools/build-libfuse.sh DEST            -> DEST/lib/libfuse3.so.4, DEST/include/fuse3/*.h
set -euo pipefail
dest=$(realpath -m "${1:?usage: build-libfuse.sh DEST}")
version=3.17.2
sha256=3d932431ad94e86179e5265cddde1d67aa3bb2fb09a5bd35c641f86f2b5ed06f
lib="$dest/lib/libfuse3.so.4"
header="$dest/include/fuse3/fuse_lowlevel.h"
[ -e "$lib" ] && [ -e "$header" ] && exit 0
# The Debian archive apt uses (deb822 "URIs:" or one-line "deb URI ..."), not its security archive.
mirror=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
              sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'; } |
          grep -v -- '-security' | grep -m1 '/debian/\?$' || true)
[ -n "$mirror" ] || { echo "build-libfuse: no Debian archive found in apt's sources (/etc/apt/sources.list*)" >&2; exit 1; }
url="${mirror%/}/pool/main/f/fuse3/fuse3_${version}.orig.tar.gz"
here=$(cd "$(dirname "$0")/.." && pwd)
meson="$here/.venv/bin/meson"
[ -x "$meson" ] || { echo "build-libfuse: $meson missing (make test installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 3 -o "$work/src.tar.gz" "$url"
echo "$sha256  $work/src.tar.gz" | sha256sum -c --quiet
tar -xzf "$work/src.tar.gz" -C "$work"
cd "$work/fuse-$version"
PATH="$here/.venv/bin:$PATH" "$meson" setup build -Dutils=false -Dexamples=false -Dtests=false \
    -Ddisable-mtab=true --buildtype=release >"$work/meson.log" 2>&1 || { cat "$work/meson.log" >&2; exit 1; }
PATH="$here/.venv/bin:$PATH" ninja -C build >"$work/ninja.log" 2>&1 || { cat "$work/ninja.log" >&2; exit 1; }
mkdir -p "$dest/lib"
cp -a build/lib/libfuse3.so.4 build/lib/libfuse3.so.$version "$dest/lib/"
mkdir -p "$dest/include/fuse3"
cp include/*.h "$dest/include/fuse3/"
find build -maxdepth 2 -name libfuse_config.h -exec cp {} "$dest/include/fuse3/" \;
echo "build-libfuse: libfuse $version in $dest/lib"
