#!/usr/bin/env bash
# The GPU check, in one command on any CUDA machine (about 8 minutes on one H100; each
# step has a time limit, 13.5 minutes in all):
#
#   bash bench/gpu_check.sh [output folder, default results/gpu_check]
#
# 1. the CUDA tests (pytest -m cuda tests/test_cuda.py): both scripts on cuda with bf16 autocast,
#    compile on and off and fused AdamW; GPU data = CPU data for all seven generators; bf16 + compile
#    learns as well as float32; checkpoint -> resume on the GPU; GPU <-> CPU checkpoints; NCCL;
# 2. the CUDA benchmark (python -m bench.bench_train --device cuda): tokens/s, MFU against the GPU's dense
#    bf16 peak, peak memory, data and eval shares, for the README shape (512 x 513) and the quickstart;
# 3. both scripts end to end: the quickstart (configs/quickstart.args, README, "Quickstart") on cuda (wall
#    time, final accuracy) and a short curriculum run on cuda.
# It ends with a short report; everything it printed is kept in the output folder. Run it from a
# Python environment with requirements.txt installed (`source .venv/bin/activate`).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-results/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
STATUS=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, note how it ended
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S) UTC, limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local code=${PIPESTATUS[0]}
  STATUS+=("$name: exit $code after $((SECONDS - start)) s")
}

"$PY" - <<'EOF' 2>&1 | tee "$OUT/device.txt"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: this check needs a GPU")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

step cuda_tests 360 "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider -s tests/test_cuda.py
step bench_cuda 240 "$PY" -m bench.bench_train --device cuda
step quickstart_cuda 120 "$PY" prng_train_lowmem.py @configs/quickstart.args --device cuda --results_dir "$OUT/quickstart"
step curriculum_cuda 90 "$PY" curriculum_lowmem.py --moduli 256,1024 --type LCG --seq_len 65 --n_layer 2 \
  --n_head 4 --n_embd 64 --batch_size 64 --n_a 32 --n_c 32 --n_test_a 8 --n_test_c 8 --eval_interval 100 \
  --custom_phases '[{"phase_steps": 300, "warmup_steps": 30, "transition_steps": 200, "end_weights": [0.3, 1.0]}, {"phase_steps": 200, "lr_decay": "cosine", "end_weights": [0.3, 1.0]}]' \
  --device cuda --results_dir "$OUT/curriculum"

echo
echo "=== report ($OUT)"
sed -n 1,20p "$OUT/device.txt"
for line in "${STATUS[@]}"; do echo "  $line"; done
echo "--- CUDA tests"
grep -E "passed|failed|error|skipped" "$OUT/cuda_tests.txt" | tail -n 3
grep -E "^LCG m=256" "$OUT/cuda_tests.txt"
echo "--- benchmark"
grep -vE "^#" "$OUT/bench_cuda.txt" | sed '/^$/d'
echo "--- quickstart on cuda (final evaluation)"
grep -A 4 "final evaluation" "$OUT/quickstart_cuda.txt"
echo "--- curriculum on cuda (last evaluation line)"
grep -E "^step" "$OUT/curriculum_cuda.txt" | tail -n 1
