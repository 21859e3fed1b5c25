#!/bin/bash
# Times `make demo` from a fresh clone of this repository's HEAD, part by part:
#   scripts/time_make_demo.sh warm    # uv's cache as it is
#   scripts/time_make_demo.sh cold    # empty uv cache, no pip cache
# The parts are the Makefile's own: `make venv`, then its two `ltlab batch` commands.
set -e
mode=${1:-warm}
repo=$(git rev-parse --show-toplevel)
d=${TMPDIR:-/tmp}/ltlab-fresh-$mode; rm -rf "$d"; git clone -q "$repo" "$d"; cd "$d"
if [ "$mode" = cold ]; then export UV_CACHE_DIR=$(mktemp -d) PIP_NO_CACHE_DIR=1; fi
t0=$(date +%s.%N)
make venv > "$d.log" 2>&1
t1=$(date +%s.%N)
.venv/bin/ltlab batch experiments/demo.yaml --jobs 2 >> "$d.log" 2>&1
t2=$(date +%s.%N)
.venv/bin/ltlab batch experiments/demo_archive.yaml --jobs 2 >> "$d.log" 2>&1
t3=$(date +%s.%N)
python3 -c "print('$mode, commit $(git rev-parse --short HEAD): install %.1f s, demo batch %.1f s, archive pages %.1f s, in all %.1f s' % ($t1-$t0, $t2-$t1, $t3-$t2, $t3-$t0))"
