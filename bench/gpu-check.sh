#!/usr/bin/env bash
# The prepared GPU check of issue 21: run once on a machine with one CUDA GPU, from the
# repository root, with a CUDA build of torch installed (README: "On a GPU"). About 5-8 minutes
# on one recent GPU (each part has a time limit; together at most 8 minutes). Writes
# everything under OUT (default gpu-check/):
#   tests.txt            the CUDA tests: every preset fitted on cuda against the CPU, with and
#                        without bfloat16 autocast, and no host sync between evaluations
#   fit.json/.txt        fit-step table at 128², 20 frames (Toeplitz vs torchkbnufft per preset;
#                        the generator section: gip against the reference structure;
#                        mridip's slot-first vs grouped graph convolutions)
#   operator.json/.txt   Toeplitz data term vs torchkbnufft (+ cufinufft forward if installed)
#   stop.json/.txt       time to stop at 128² x 20 frames for mridip and tddip (their step
#                        limits, 4000 and 1500; the section is cut at 210 s)
#   summary.txt          the machine and which parts passed
# --dry-run prints the commands; --cpu-smoke runs them at tiny sizes on the CPU (for CI).
set -u
OUT=${OUT:-gpu-check}
PY=${PY:-.venv/bin/python}
MRIDIP=${MRIDIP:-.venv/bin/mridip}
DEVICE=cuda
QUICK=""
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --cpu-smoke) DEVICE=cpu; QUICK="--quick" ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option $arg (use --dry-run or --cpu-smoke)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
status=0
run() {  # run NAME TIMEOUT_S CMD...: tee output to OUT/NAME.txt, remember failures
  local name=$1 limit=$2; shift 2
  echo "+ $*"
  if [ "$DRY" = 1 ]; then return 0; fi
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.txt"
  echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  [ "$rc" = 0 ] || status=1
}
: >"$OUT/summary.txt"
if [ "$DRY" = 0 ]; then
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
    | tee -a "$OUT/summary.txt"
  if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu-check: torch sees no CUDA device (install the CUDA build, see README)" >&2
    exit 2
  fi
fi
if [ "$DEVICE" = cuda ]; then
  run tests 120 "$PY" -m pytest -q -m cuda tests/test_gpu_path.py tests/test_models.py
fi
run fit 90 "$MRIDIP" bench $QUICK --device "$DEVICE" --only fit,generator -o "$OUT/fit.json"
run operator 60 "$MRIDIP" bench $QUICK --device "$DEVICE" --only operator -o "$OUT/operator.json"
run stop 210 "$MRIDIP" bench $QUICK --device "$DEVICE" --only stop --methods mridip,tddip \
  -o "$OUT/stop.json"
echo "gpu-check: results in $OUT/ (exit $status)"
exit $status
