#!/usr/bin/env bash
# Keeps a device call under its 64 MiB as benchmarks/results grows (1-4 MB a GPU session): moves every results
# folder a GPU job does not read out of the tree into .devstage/held/ (ignored, so it does not travel), and back
# once the staging calls are through. On 2026-12-07 the tree with the bundle came to 65.9 MB with the four folders
# the sweep chain's header named held out by hand, 1.3 MB under the limit; with all but the two below, 42.1 MB.
#   bash benchmarks/hold_results.sh out [KEEP ...]   # KEEP: folder names under benchmarks/results to leave there
#   bash benchmarks/hold_results.sh back
# KEEP by default: 2026-12-04-sweep-500 (the sweep part's RESUME_FROM) and 2026-12-02-trial-speed-defaults (a test
# reads it). Never commit while folders are held: git would record them as deleted. `out` refuses while some are
# held, and both check everything before they move anything.
set -euo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
held=.devstage/held
fail() { echo "hold_results.sh: $*" >&2; exit 2; }
case ${1:-} in
  out)
    shift
    keep=("$@")
    [ ${#keep[@]} -gt 0 ] || keep=(2026-12-04-sweep-500 2026-12-02-trial-speed-defaults)
    [ ! -e "$held" ] || fail "$held holds folders already: run 'bash benchmarks/hold_results.sh back' first"
    for name in "${keep[@]}"; do [ -d "$results/$name" ] || fail "no results folder $results/$name to keep"; done
    mkdir -p "$held"
    moved=0
    for dir in "$results"/*/; do
      name=$(basename "$dir")
      [[ " ${keep[*]} " == *" $name "* ]] && continue
      mv "$results/$name" "$held/"
      moved=$((moved + 1))
    done
    echo "held $moved results folders out in $held (kept: ${keep[*]}); after the staging calls, and before any" \
         "commit: bash benchmarks/hold_results.sh back"
    ;;
  back)
    [ -d "$held" ] || fail "nothing is held ($held does not exist)"
    shopt -s nullglob  # every folder kept: nothing held, an empty list
    folders=("$held"/*/)
    for dir in "${folders[@]}"; do
      name=$(basename "$dir")
      [ ! -e "$results/$name" ] || fail "$results/$name exists beside the held copy: nothing moved; compare them"
    done
    for dir in "${folders[@]}"; do mv "${dir%/}" "$results/"; done
    rmdir "$held"
    echo "put ${#folders[@]} results folders back in $results"
    ;;
  *) fail "usage: bash benchmarks/hold_results.sh out [KEEP ...] | back" ;;
esac
