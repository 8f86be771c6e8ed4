#!/usr/bin/env bash
# THE one script a GPU session runs (about 5-6 minutes on an H100), from the repository root:
#   1. installs what the bare GPU machine lacks (pydantic, pyyaml, tqdm, pytest) from carried wheels,
#      offline (benchmarks/fetch_gpu_wheels.sh makes build/gpu_wheels; carry it);
#   2. runs the GPU tests (pytest -m gpu: CUDA-graph step vs eager, no host sync while replaying,
#      recapture, graphed resume, packed graph vs separate trials);
#   3. runs the throughput benchmark (single eager/graphed at batch 128 and 512, bare ceiling, the
#      DataLoader reference if torchvision is there, packed 1/2/4/8, 2 and 4 processes).
# Everything lands in $OUT (default ./gpu_check_out): env.txt, gpu_tests.log/.xml, throughput.log,
# throughput.json (rewritten after every measurement, so a timeout keeps what was measured) and
# gpu_check.json (exit codes and durations).
# Knobs: TEST_TIMEOUT (s, default 150), BENCH_TIMEOUT (s, default 330), BENCH_ARGS (extra arguments).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # one GPU: every number is per card
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,compute_mode --format=csv 2>&1 | head -3
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: torch sees no CUDA device (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES): nothing to check" >&2
  exit 3
fi

# 1. Offline installs of whatever is missing, into build/gpu_pydeps (first on PYTHONPATH).
missing=$("$PY" - <<'EOF'
import importlib.util
need = {"pydantic": "pydantic", "yaml": "pyyaml", "tqdm": "tqdm", "pytest": "pytest", "numpy": "numpy"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [[ -n "$missing" ]]; then
  echo "installing from build/gpu_wheels: $missing"
  if ! "$PY" -m pip install --quiet --no-index --find-links build/gpu_wheels --target build/gpu_pydeps $missing \
      > "$OUT/pip.log" 2>&1; then
    echo "pip failed (see pip.log); unpacking the matching wheels directly"
    "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/pip.log"
import pathlib, sys, zipfile
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
for wheel in sorted(pathlib.Path("build/gpu_wheels").glob("*.whl")):
    if "py3-none-any" in wheel.name or f"-{tag}-" in wheel.name:
        zipfile.ZipFile(wheel).extractall("build/gpu_pydeps")
        print("unpacked", wheel.name)
EOF
  fi
  export PYTHONPATH="$PWD/build/gpu_pydeps:$PYTHONPATH"
fi

# 2. GPU tests.
t0=$(date +%s)
timeout "${TEST_TIMEOUT:-150}" "$PY" -m pytest -m gpu tests/test_cuda_graphs.py tests/test_packing.py \
  -q -rA -p no:cacheprovider --durations=10 --junitxml "$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
if [[ $tests_rc -eq 0 ]] && grep -q "skipped" "$OUT/gpu_tests.log"; then
  tests_rc=5  # a skipped GPU test on a GPU machine is a failure to check
fi
t1=$(date +%s)

# 3. Throughput.
timeout "${BENCH_TIMEOUT:-330}" "$PY" benchmarks/throughput.py --device cuda --json "$OUT/throughput.json" \
  ${BENCH_ARGS:-} 2>&1 | tee "$OUT/throughput.log"
bench_rc=${PIPESTATUS[0]}
t2=$(date +%s)

printf '{"tests_rc": %d, "tests_s": %d, "bench_rc": %d, "bench_s": %d}\n' \
  "$tests_rc" $((t1 - t0)) "$bench_rc" $((t2 - t1)) | tee "$OUT/gpu_check.json"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
