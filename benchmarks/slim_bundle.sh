#!/usr/bin/env bash
# Keeps a device call 1 under its 64 MiB: the device tool measures what travels as a tar of the tracked tree
# plus the carried paths (512-byte headers and padding per file, so benchmarks/results' 2,400 small files
# count more than their bytes). On 2026-12-06 the tree (26.4 MB as tar) with the bundle and the inputs came
# to 67.5 MB, 0.4 MB over, and was refused. This repacks .devbundle/site.tar.xz without the parts of Ray no
# benchmark loads (its LLM library, the dashboard's web client, which a minimal Ray never serves, and Tune's
# examples), with xz -9e: 38.2 MB to 36.8 MB. Liger stays: `training.liger_kernels: auto` uses it where
# installed, and removing it would change the kernels a timing compares against earlier ones.
#   bash benchmarks/slim_bundle.sh            # repack, then print the size of call 1
#   bash benchmarks/slim_bundle.sh --check    # only print it
set -euo pipefail
carried=(.devbundle .devstage/inputs.tar.xz)
if [ "${1:-}" != "--check" ]; then
  [ -f .devbundle/site.tar.xz ] || { echo "slim_bundle.sh: no .devbundle/site.tar.xz: run ../shared/tools/device-bundle first" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tar xJf .devbundle/site.tar.xz -C "$work"
  rm -rf "$work"/site/ray/llm "$work"/site/ray/dashboard/client "$work"/site/ray/tune/examples
  tar cf - -C "$work" site | xz -9e -T0 > "$work/site.tar.xz"
  mv "$work/site.tar.xz" .devbundle/site.tar.xz  # only a whole new bundle replaces the old one
fi
existing=()
for path in "${carried[@]}"; do [ -e "$path" ] && existing+=("$path"); done
bytes=$( (git ls-files; printf '%s\n' "${existing[@]}") | tar cf - -T - | wc -c)
limit=$((64 * 1024 * 1024))
echo "call 1 (tracked tree + ${existing[*]}): $bytes bytes as tar, limit $limit, $((limit - bytes)) to spare"
[ "$bytes" -le "$limit" ]
