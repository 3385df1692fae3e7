#!/bin/bash
# SLURM array sweep of the curriculum run over (lr_trgt, weight_decay) (docs/clusters.md, "Sweeps on SLURM").
#
# Task t of the array trains with lr_trgt = LRS[(t / 2) % 2] and weight_decay = WDS[t % 2], so
# --array=0-3 covers the grid: 0 -> (1e-4, 0), 1 -> (1e-4, 0.1), 2 -> (5e-4, 0), 3 -> (5e-4, 0.1).
# Each task runs two processes (srun) that form one DDP group: effective batch 2 x batch_size.
#
# Submit from the repository root. SLURM opens the log files before this script runs, so the log
# directory must exist before the first submission:
#
#   mkdir -p out/FT && sbatch curriculum_finetune.sh
#
# Options on the sbatch command line override the directives below, e.g. on a cluster whose GPU
# partition has another name: sbatch --partition=a100 curriculum_finetune.sh
#
# Environment (all optional):
#   FT_BASE_CONFIG  the curriculum YAML the sweep starts from (default configs/curriculum.yaml, the
#                   README example); each task writes a copy with its lr_trgt and weight_decay, its
#                   results_dir, save_params and save_correctness set, and deletes it at the end
#   FT_RESULTS_DIR  where the runs write their files (default results/FT)
#   FT_OVERRIDES    extra curriculum_lowmem.py flags, quoted as on a command line; they override the
#                   YAML, e.g. a tiny model on CPUs:
#                   FT_OVERRIDES="--n_layer 1 --n_head 2 --n_embd 32 --seq_len 9 --device cpu"
#   FT_PYTHON       the Python that runs the training (default: python)
#
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=8
#SBATCH --time=18:00:00
#SBATCH --job-name=FT
#SBATCH --output=out/FT/%A_%a.out
#SBATCH --error=out/FT/%A_%a.err
#SBATCH --mem=64G
#SBATCH --gpus-per-node=a100:2
#SBATCH --partition=gpu
# Empty as in the original: SLURM then mails the submitting user.
#SBATCH --mail-user=
#SBATCH --mail-type=FAIL
#SBATCH --array=0-3

set -euo pipefail
: "${SLURM_JOB_ID:?submit this script with sbatch (see its header)}"

cd "$SLURM_SUBMIT_DIR"
mkdir -p out/FT configs

PYTHON=${FT_PYTHON:-python}
BASE_CONFIG=${FT_BASE_CONFIG:-configs/curriculum.yaml}
RESULTS_DIR=${FT_RESULTS_DIR:-results/FT}
eval "OVERRIDES=(${FT_OVERRIDES:-})"

LRS=(1e-4 5e-4)
WDS=(0 0.1)
TASK=${SLURM_ARRAY_TASK_ID:-0}
LR=${LRS[$(( (TASK / 2) % 2 ))]}
WD=${WDS[$(( TASK % 2 ))]}

# The rendezvous port comes from this task's own job id alone: every array task has a job id of its
# own (SLURM_JOB_ID; the tasks share only SLURM_ARRAY_JOB_ID), so two jobs or tasks that run on one
# node at the same time get different ports unless their ids differ by a multiple of 10000. It is the
# port utils/distributed.py's rendezvous() picks under srun when MASTER_PORT is not set. (The original
# also added the array index, so id + index repeats: e.g. task 1 with id J + 2 and task 3 with id J, the
# array's own id, which Slurm leaves to the task it starts last.)
export MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 10000 ))
export WORLD_SIZE=$(( SLURM_NNODES * SLURM_NTASKS_PER_NODE ))
mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
export MASTER_ADDR=${HOSTS[0]}
export PYTHONUNBUFFERED=1
# Since Slurm 22.05 srun no longer takes --cpus-per-task from the batch allocation.
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

CONFIG=configs/curriculum_temp_${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${TASK}.yaml
trap 'rm -f "$CONFIG"' EXIT
trap 'exit 143' TERM  # so that a cancelled or timed-out task still removes its YAML

"$PYTHON" - "$BASE_CONFIG" "$CONFIG" "$LR" "$WD" "$RESULTS_DIR" <<'PY'
import sys

try:
    import yaml
except ImportError:
    sys.exit(f"{sys.executable} has no PyYAML: pip install -r requirements.txt (or set FT_PYTHON)")

base, out, lr, wd, results_dir = sys.argv[1:]
with open(base) as fh:
    config = yaml.safe_load(fh)
config["training"] = {**(config.get("training") or {}), "lr_trgt": float(lr), "weight_decay": float(wd)}
config["output"] = {**(config.get("output") or {}), "results_dir": results_dir, "save_params": True,
                    "save_correctness": True}
with open(out, "w") as fh:
    yaml.safe_dump(config, fh, sort_keys=False)
PY

echo "job ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${TASK} on ${SLURM_JOB_NODELIST}: lr_trgt=${LR} weight_decay=${WD}"
echo "  config ${CONFIG} (from ${BASE_CONFIG}), results ${RESULTS_DIR}, ${WORLD_SIZE} processes," \
     "rendezvous ${MASTER_ADDR}:${MASTER_PORT}"
if [[ ${#OVERRIDES[@]} -gt 0 ]]; then echo "  overrides: ${OVERRIDES[*]}"; fi

srun "$PYTHON" curriculum_lowmem.py --config "$CONFIG" "${OVERRIDES[@]}"
