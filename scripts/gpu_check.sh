#!/usr/bin/env bash
# The whole GPU check in one device call: install the project over the machine's torch from
# the carried wheels, then run each CUDA check in its time box, into one table and a log per
# step under $OUT (README: GPU check).
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --install-only  # the install phase alone (tested on Python 3.12)
#   bash scripts/gpu_check.sh --dry-run       # anywhere, no CUDA: the steps, their time boxes,
#                                             # the wheel list against pyproject.toml
#
# The machine has Python 3.12 with its own torch (CUDA) and reaches no registry: every other
# package comes from .whl/ (scripts/gpu_wheels.py fetch), installed with --no-index into
# $GPU_CHECK_SITE. Anything missing stops the install with one line naming it.
# Environment: OUT (default /tmp/gpu_check), PYTHON (default python3), GPU_CHECK_SITE
# (default /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/site}
RUNS=/tmp/gpu_check_runs
BUDGET_S=480           # all time boxes together: the device call allows 600 s, startup aside
INSTALL_S=50
MAX_FILES=8            # the device call brings back at most 8 files from $OUT

# name|time box (s)|command: run in this order, each in `timeout`, its log $OUT/NAME.log.
STEPS=(
  "cuda_tests|60|$PY -m pytest -p no:cacheprovider -n 0 -q -rs -m cuda tests/test_cuda.py"
  "bench_adalomo|50|$PY scripts/bench_adalomo.py --device cuda --models llama_60m llama_350m --rounds 11 --batch 8 --seq-len 512"
  "bench_galore|110|$PY scripts/bench_galore.py --device cuda --models llama_60m llama_350m --steps 10 --refreshes 1"
  "estimate|60|$PY scripts/check_estimate.py --device cuda --models llama_350m llama_1b --optimizers adalomo adamw --precisions fp32 bf16_weights"
  "llama_7b|80|$PY scripts/train_steps.py --steps 6 model=llama_7b optimizer=adalomo trainer.precision=bf16_weights trainer.activation_checkpointing=true trainer.batch_size=1 trainer.seq_len=512 trainer.device=cuda"
  "jobs|70|$PY -m ablate trainer.device=cuda outputs_dir=$RUNS && $PY -m ablate -m optimizer=adalomo toggles=all,no_nmf trainer.max_steps=100 trainer.device=cuda logger.wandb.mode=disabled outputs_dir=$RUNS"
)

field() { cut -d'|' -f"$2" <<<"$1"; }

dry_run() {
  local total=$INSTALL_S files=2 step script
  echo "gpu_check.sh --dry-run: the steps, in order (time box in seconds)"
  printf '  %-14s %4s s  %s\n' install "$INSTALL_S" \
    "scripts/gpu_wheels.py present; pip install --no-index .whl/*.whl and the project; scripts/gpu_wheels.py missing"
  for step in "${STEPS[@]}"; do
    printf '  %-14s %4s s  %s\n' "$(field "$step" 1)" "$(field "$step" 2)" "$(field "$step" 3)"
    total=$((total + $(field "$step" 2)))
    files=$((files + 1))
    for script in $(grep -o '\(scripts\|tests\)/[a-z_0-9]*\.py' <<<"$(field "$step" 3)"); do
      [[ -f $script ]] || { echo "gpu_check: step $(field "$step" 1) runs $script, which is not there"; return 1; }
    done
  done
  echo "total time boxes: $total s (at most $BUDGET_S s); files back in \$OUT: $files (at most $MAX_FILES)"
  ((total <= BUDGET_S)) || { echo "gpu_check: the time boxes add up to $total s, over $BUDGET_S s"; return 1; }
  ((files <= MAX_FILES)) || { echo "gpu_check: $files files in \$OUT, over $MAX_FILES"; return 1; }
  grep -q '"cuda:' pyproject.toml || { echo "gpu_check: pyproject.toml registers no cuda marker"; return 1; }
  "$PY" scripts/gpu_wheels.py check
}

install() {  # one line on stdout if anything fails; pip's own output in $OUT/install.log
  local log=$OUT/install.log
  "$PY" scripts/gpu_wheels.py present >"$log" 2>&1 || { tail -n 1 "$log"; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >>"$log" 2>&1 \
    || { echo "gpu_check: pip could not install the wheels of .whl/ (see $log)"; return 1; }
  export PYTHONPATH=$SITE
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --upgrade --target "$SITE" . >>"$log" 2>&1 \
    || { echo "gpu_check: pip could not install the project (see $log)"; return 1; }
  "$PY" scripts/gpu_wheels.py missing >>"$log" 2>&1 || { tail -n 1 "$log"; return 1; }
  "$PY" -c "import torch, ablate.train; print('torch', torch.__version__, 'cuda',
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
    >>"$log" 2>&1 || { echo "gpu_check: the project does not import (see $log)"; return 1; }
  tail -n 1 "$log"
}

case ${1:-} in
  --dry-run) dry_run; exit ;;
  --install-only) mkdir -p "$OUT"; install; exit ;;
  "") ;;
  *) echo "gpu_check: unknown option ${1} (allowed: --dry-run, --install-only, none)"; exit 1 ;;
esac

mkdir -p "$OUT"
began=$SECONDS
install_line=$(timeout "$INSTALL_S" bash -c "$(declare -f install); OUT=$OUT PY=$PY SITE=$SITE install")
install_rc=$?
((install_rc == 124)) && install_line="gpu_check: the install ran past its $INSTALL_S s (see $OUT/install.log)"
echo "$install_line"
((install_rc == 0)) || exit 1
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1 WANDB_SILENT=true HF_HUB_OFFLINE=1
table=$OUT/gpu_check.md
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "$install_line; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
  echo
  echo "| step | result | seconds | time box |"
  echo "|---|---|---:|---:|"
  echo "| install | ok | $((SECONDS - began)) | $INSTALL_S |"
} >"$table"
for step in "${STEPS[@]}"; do
  name=$(field "$step" 1) box=$(field "$step" 2) command=$(field "$step" 3)
  started=$SECONDS
  echo "== $name (at most $box s): $command"
  timeout -k 5 "$box" bash -c "$command" >"$OUT/$name.log" 2>&1
  rc=$?
  case $rc in 0) result=ok ;; 124 | 137) result="timed out" ;; *) result="failed (exit $rc)" ;; esac
  echo "   $result in $((SECONDS - started)) s"
  echo "| $name | $result | $((SECONDS - started)) | $box |" >>"$table"
done
{
  echo "| total | | $((SECONDS - began)) | |"
  for step in "${STEPS[@]}"; do
    name=$(field "$step" 1)
    printf '\n## %s\n\n`%s`\n\n```\n' "$name" "$(field "$step" 3)"
    tail -n 40 "$OUT/$name.log"
    echo '```'
  done
} >>"$table"
cat "$table"
