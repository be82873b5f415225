#!/usr/bin/env bash
# Prepare, on a machine with network, what bench/gpu_check.sh needs on a borrowed GPU machine that has none:
#   .whl/       aebench's own wheel, built from this checkout, keras with the two of its dependencies that machine
#               lacks (namex, optree), and aebench's two that it lacks (tabulate, py-cpuinfo2), as Python 3.12 x86-64
#               wheels
#   .gpu-data/  mnist.npz, copied from $AEBENCH_DATA (or ../shared/data) when it is there
# Both folders are git-ignored; name them in the device run's carry list. The GPU machine already has numpy, pandas,
# matplotlib, scipy, scikit-learn, psutil, jinja2 and keras' other needs (absl-py, rich, h5py, ml-dtypes, packaging).
# Versions default to the ones CI tests with; override with KERAS=... NAMEX=... OPTREE=... TABULATE=... PY_CPUINFO2=...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
KERAS=${KERAS:-3.15.1}
NAMEX=${NAMEX:-0.1.0}
OPTREE=${OPTREE:-0.20.0}
TABULATE=${TABULATE:-0.10.0}
PY_CPUINFO2=${PY_CPUINFO2:-10.1.1}

rm -rf .whl && mkdir -p .whl  # one version of each: two wheels of one package stop the whole install there
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "keras==$KERAS" "namex==$NAMEX" "optree==$OPTREE" "tabulate==$TABULATE" "py-cpuinfo2==$PY_CPUINFO2"
# The wheel records the commit it is built from (aebench.machine.git_revision reads it), so that the results of a
# machine without this checkout's git history still name their commit and whether the tree was dirty.
trap 'rm -rf bench/_revision.json build' EXIT  # build/lib would carry the record into a later pip install .
dirty=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || dirty=true
printf '{"commit": "%s", "dirty": %s, "date": "%s"}\n' "$(git rev-parse HEAD)" "$dirty" \
    "$(git show -s --format=%cI HEAD)" >bench/_revision.json
rm -rf build  # a stale build/ folder can carry an older revision file into the wheel
"$PYTHON" -m pip wheel --quiet --no-deps -w .whl .  # pure Python: the same wheel installs on any Python >= 3.11
ls -l .whl

data=${AEBENCH_DATA:-../shared/data}
if [ -f "$data/mnist.npz" ]; then
    mkdir -p .gpu-data && cp "$data/mnist.npz" .gpu-data/
    echo "copied $data/mnist.npz to .gpu-data/"
else
    echo "no mnist.npz in $data: put one in .gpu-data/ before the GPU run" >&2
fi
echo "device run: bash bench/gpu_check.sh .gpu-data \$OUT   (carry: .whl, .gpu-data)"
