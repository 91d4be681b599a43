#!/usr/bin/env bash
# Builds a minimal Debian image for toolgate's docker backend without any
# container registry: mmdebstrap assembles a root filesystem from Debian's
# packages and `docker import` turns it into an image.
#
#   sandboxes/docker/build-image.sh [IMAGE] [EXTRA_PACKAGES...]
#
# Default IMAGE: toolgate-python:bookworm (python3 with numpy, pandas and
# matplotlib, as the wasm runtime has them; coreutils; a shell).
# The image has a non-root user `sandbox` (uid/gid 10001), works in
# /workspace, and carries the label toolgate.image=1.
set -euo pipefail
image="${1:-toolgate-python:bookworm}"
shift || true
packages="python3,python3-numpy,python3-pandas,python3-matplotlib${*:+,$(IFS=,; echo "$*")}"
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 4; }
command -v docker >/dev/null || { echo "docker is missing" >&2; exit 4; }
echo "toolgate: building $image from Debian bookworm ($packages) …" >&2
mmdebstrap --quiet --variant=essential --include="$packages" \
  --customize-hook='echo "sandbox:x:10001:10001:toolgate sandbox:/home/sandbox:/bin/sh" >> "$1/etc/passwd"' \
  --customize-hook='echo "sandbox:x:10001:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/workspace" "$1/home/sandbox" && chown 10001:10001 "$1/workspace" "$1/home/sandbox"' \
  --customize-hook='rm -rf "$1/var/cache/apt"/* "$1/var/lib/apt/lists"/*' \
  bookworm - |
  docker import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /workspace' \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/sandbox LANG=C.UTF-8 MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib' \
    --change 'LABEL toolgate.image=1' \
    - "$image" >/dev/null
echo "toolgate: built $image" >&2
