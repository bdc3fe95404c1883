#!/usr/bin/env bash
# Keeps a device call 1 under its 64 MiB: the device tool measures what travels as a tar of the tracked tree
# plus the carried paths (512-byte headers and padding per file, so benchmarks/results' 2,400 small files
# count more than their bytes). On 2026-12-06 the tree (26.4 MB as tar) with the bundle and the inputs came
# to 67.5 MB, 0.4 MB over, and was refused. This repacks .devbundle/site.tar.xz without the parts of Ray no
# benchmark loads (its LLM library, the dashboard's web client, which a minimal Ray never serves, and Tune's
# examples), with xz -9e: 38.2 MB to 36.8 MB. RLlib and Serve go too (as the sweep chain's header has done by
# hand since 2026-12-03): device-bundle packs them, and a fresh bundle is 47.9 MB with them; and bitsandbytes'
# library for CUDA 13.2, which the device's torch (cu130) never loads: 47.9 MB to 37.2 MB on 2026-12-06.
# Liger stays: `training.liger_kernels: auto` uses it where installed, and removing it would change the
# kernels a timing compares against earlier ones.
# With 0.5 MB to spare on 2026-12-06 after that day's results, the GPU jobs' headers now carry the inputs
# in a second call: the bundle with the tree left 3.3 MB.
#   bash benchmarks/slim_bundle.sh            # repack, then print what each way of staging carries
#   bash benchmarks/slim_bundle.sh --check    # only print it; exit 1 if the bundle with the tree is over
set -euo pipefail
if [ "${1:-}" != "--check" ]; then
  [ -f .devbundle/site.tar.xz ] \
    || { echo "slim_bundle.sh: no .devbundle/site.tar.xz: run ../shared/tools/device-bundle first" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tar xJf .devbundle/site.tar.xz -C "$work"
  rm -rf "$work"/site/ray/llm "$work"/site/ray/dashboard/client "$work"/site/ray/tune/examples \
         "$work"/site/ray/rllib "$work"/site/ray/serve
  # bitsandbytes loads the library of torch's CUDA version: the device's torch is cu130, so the cuda132 one
  # (3.5 MB of the packed bundle, xz barely shrinks it) never loads there
  rm -f "$work"/site/bitsandbytes/libbitsandbytes_cuda132.so
  tar cf - -C "$work" site | xz -9e -T0 > "$work/site.tar.xz"
  mv "$work/site.tar.xz" .devbundle/site.tar.xz  # only a whole new bundle replaces the old one
fi
# What a call carries, as the device tool measures it: the tracked tree and the named paths, as one tar. Only the
# tracked files that are here: a results folder held out for the call (the sweep chain's header) does not travel.
# Listed once: every call below carries the same tree.
present=$(git ls-files | while IFS= read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done)
tar_size() { printf '%s\n' "$present" "$@" | tar cf - -T - | wc -c; }
limit=$((64 * 1024 * 1024))
status=0
# The wheel's parts (the sweep chain's calls 2-4) where they are staged: on 2026-12-07 the tree alone was 37.5 MB as
# tar, so those calls too were over unless results folders stayed out (the chain's header says which)
wheel_calls=()
for part in .devstage/w1 .devstage/w2 ".devstage/w3 .devstage/inputs.tar.xz"; do
  [ -e "${part%% *}" ] && wheel_calls+=("$part")
done
for carry in ".devbundle .devstage/inputs.tar.xz" ".devbundle" ".devstage/inputs.tar.xz" "${wheel_calls[@]}"; do
  read -ra paths <<< "$carry"
  for path in "${paths[@]}"; do [ -e "$path" ] || { echo "slim_bundle.sh: no $path" >&2; exit 2; }; done
  bytes=$(tar_size "${paths[@]}")
  echo "a call carrying $carry with the tree: $bytes bytes as tar, $((limit - bytes)) to spare of $limit"
  [ "$carry" != ".devbundle" ] || [ "$bytes" -le "$limit" ] || status=1
done
exit $status  # the bundle with the tree must fit one call; the inputs can travel in the next
