#!/usr/bin/env bash
# On the GPU machine, before a chain times anything: the bundle's packages and the project as a pip
# install leaves them, byte-compiled. The bundle ships no .pyc, and where Python may not write them
# (PYTHONDONTWRITEBYTECODE, as on this project's CPU machines, where it cost a test-sized sweep 27.7 s
# against 16.1 s: benchmarks/results/2026-12-04-bytecode) every fresh trial worker compiled Ray, TRL,
# datasets and the rest again. Chain runs before e72770c did not do this.
#   bash benchmarks/compile_bundle.sh RES    (appends to RES/versions.txt, logs to RES/compileall.log)
res=${1:?the results folder}
python3 -c "import sys; print('python', sys.version.split()[0], 'dont_write_bytecode', sys.flags.dont_write_bytecode)" \
    >> "$res/versions.txt"  # whether this machine's Python would have written .pyc files itself
began=$SECONDS
python3 -m compileall -q -j 0 /tmp/site /tmp/proj > "$res/compileall.log" 2>&1
echo "byte-compiled the bundle and the project in $((SECONDS - began)) s"
