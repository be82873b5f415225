#!/usr/bin/env bash
# The prepared GPU check, for a borrowed GPU machine that has Python, JAX and torch but no TensorFlow and no network.
#
#   bash bench/gpu_check.sh DATA_DIR OUT_DIR [aebench run options]   (or: make gpu-check GPU_DATA=... GPU_OUT=...)
#
# Options after OUT_DIR go to `aebench run gpu`; a dry run on a machine without a GPU, for example:
#   bash bench/gpu_check.sh .gpu-data /tmp/out --set 'device=["cpu"]' --set train_size=2048 --set test_size=1000
#
# DATA_DIR holds mnist.npz; OUT_DIR receives the store (aebench.sqlite), the report (<run-id>/index.html), the run's
# log, `aebench devices`, a CSV export and summary.txt with the key numbers: 7 files. Keras and its two dependencies
# that such a machine lacks (namex, optree), and aebench's two (tabulate, py-cpuinfo2), come as wheels in .whl/ beside
# the repo: bench/gpu_wheels.sh fetches them
# (and copies mnist.npz to .gpu-data/) on a machine with network, and builds aebench's own wheel from this checkout
# there: rerun it after changing the code.
# It runs bench/matrices/gpu.toml (8 cells): 255 s on an H200, the install included. PYTHON picks the interpreter.
set -euo pipefail
usage="usage: bash bench/gpu_check.sh DATA_DIR OUT_DIR [aebench run options]"
DATA_DIR=$(realpath "${1:?$usage}")  # both resolved from the caller's folder, before the cd below
mkdir -p "${2:?$usage}"
OUT_DIR=$(realpath "$2")
shift 2
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${AEBENCH_SITE:-/tmp/aebench-site}
[ -f "$DATA_DIR/mnist.npz" ] || { echo "gpu_check: $DATA_DIR/mnist.npz is missing" >&2; exit 2; }
started=$(date +%s)

compgen -G ".whl/aebench-*.whl" >/dev/null || { echo "gpu_check: no aebench wheel in .whl/ (run bench/gpu_wheels.sh where there is network)" >&2; exit 2; }
wheels=(.whl/aebench-*.whl)
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('keras', 'namex', 'optree', 'tabulate', 'cpuinfo')))"; then
    wheels=(.whl/*.whl)  # keras and the dependencies this machine lacks, beside aebench
fi
rm -rf "$SITE"
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"  # the runner passes PYTHONPATH on to its workers
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== what the frameworks see"
KERAS_BACKEND=jax "$PYTHON" - <<'EOF'
import importlib
for name in ("keras", "jax", "torch"):
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        print(f"{name}: not importable ({error})")
        continue
    print(f"{name} {module.__version__}")
    if name == "jax":
        print("  devices:", module.devices())
    if name == "torch":
        print("  cuda:", module.cuda.is_available() and module.cuda.get_device_name(0))
EOF
# NVIDIA's own view, when the tool is there
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== aebench devices"
"$PYTHON" -m aebench.cli devices | tee "$OUT_DIR/devices.txt"

echo "== aebench run gpu"
status=0
"$PYTHON" -m aebench.cli run gpu --data-dir "$DATA_DIR" --store "$OUT_DIR/aebench.sqlite" \
    --reports-dir "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/run.log" || status=$?
rm -f "$OUT_DIR/latest.html"  # the same page as <run-id>/index.html: one copy is enough to bring back
[ -f "$OUT_DIR/aebench.sqlite" ] || { echo "gpu_check: the run stored nothing (see run.log)" >&2; exit $(( status ? status : 1 )); }
"$PYTHON" -m aebench.cli export --store "$OUT_DIR/aebench.sqlite" --format csv >"$OUT_DIR/results.csv"

echo "== key numbers"
"$PYTHON" - "$OUT_DIR/aebench.sqlite" "$started" <<'EOF' | tee "$OUT_DIR/summary.txt"
import sys
import time

from aebench.store import open_store

TRAIN_TARGET, P50_TARGET_MS = 200_000, 0.25  # the issue's targets for the JAX conv cell on an H100
with open_store(sys.argv[1], create=False) as store:
    results = store.results(store.resolve_run(None))
print(f"{'cell':<52} {'status':<8} {'train img/s':>12} {'infer img/s':>12} {'b1 p50 ms':>10} {'b1 p99 ms':>10} "
      f"{'PSNR dB':>8}  ran on")
for result in results:
    m = result.metrics

    def show(key, digits=0):
        value = m.get(key)
        return "-" if value is None else f"{value:,.{digits}f}"

    print(f"{result.cell.key:<52} {result.status:<8} {show('speed.train_ips'):>12} {show('speed.infer_ips'):>12} "
          f"{show('speed.latency_b1_p50_ms', 3):>10} {show('speed.latency_b1_p99_ms', 3):>10} "
          f"{show('quality.psnr_db', 2):>8}  {result.info.get('weights_device') or result.error}")
for result in results:
    if (result.cell.variant, result.cell.backend, result.cell.precision) == ("conv", "jax", "float32"):
        if result.status != "ok":
            print(f"JAX conv float32: not measured ({result.status}: {result.error})")
            continue
        train = result.metrics.get("speed.train_ips") or 0.0
        p50 = result.metrics.get("speed.latency_b1_p50_ms") or float("inf")
        print(f"JAX conv float32: train {train:,.0f} img/s (target >= {TRAIN_TARGET:,}: "
              f"{'met' if train >= TRAIN_TARGET else 'MISSED'}), batch-1 p50 {p50:.3f} ms "
              f"(target <= {P50_TARGET_MS}: {'met' if p50 <= P50_TARGET_MS else 'MISSED'})")
print(f"gpu_check: {time.time() - int(sys.argv[2]):.0f} s in all")
EOF
exit "$status"
