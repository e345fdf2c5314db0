#!/usr/bin/env bash
# `make bench-gpu` on a lent GPU machine, in one device call: `make bench-gpu` prints the call
# (this command, its carry list, its timeout). The machine is offline, runs Python 3.12 with
# torch (CUDA 13) preinstalled and takes at most 64 MiB of files a call: this tree's files and
# build/gpu/site.tar.xz (`make bench-gpu-pack`: ctranslate2, av, faster-whisper, openai-whisper,
# pydantic, jiwer...). Unpacks that, gives CTranslate2 the cuBLAS 12 it dlopens (the machine has
# CUDA 13's .so.13), keeps CUDA's JIT cache (CTranslate2 4.8.5 has no sm_90 code: an H100 JITs its
# PTX once), then runs bench/bench_gpu.py: the device's facts, both runners on full batches and
# the worker's batched path; results and log.txt under $OUT. About 6-7 min on an H100 (estimated:
# no GPU has run it yet); no step starts after BUDGET s, and LIMIT s kills it.
#
# DEVICE=cpu runs the same path here on this machine's own packages (tests/bench: the CPU smoke).
# Arguments after the script go to bench/bench_gpu.py (e.g. --quick, --shapes large-v3-turbo).
set -uo pipefail
export PYTHONUNBUFFERED=1
PY="${PY:-python3}" DEVICE="${DEVICE:-cuda}" OUT="${OUT:-$PWD/out}"
SITE_TAR="${SITE_TAR:-build/gpu/site.tar.xz}" SITE="${SITE:-/tmp/bench-gpu-site}"
BUDGET="${BUDGET:-330}" LIMIT="${LIMIT:-440}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "1. packages"
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)' || exit 1
if [ -f "$SITE_TAR" ] && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  mkdir -p "$SITE" && tar -xJf "$SITE_TAR" -C "$SITE" || exit 1
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "unpacked $SITE_TAR into $SITE ($(du -sh "$SITE" | cut -f1))"
else
  echo "no cp312 site tree used ($SITE_TAR absent, or $PY is not 3.12): $PY's own packages"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$DEVICE" = cuda ]; then
  step "2. cuBLAS 12 for CTranslate2"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || true
  cublas=$("$PY" - <<'PYCODE'
import glob, os, site
roots = site.getsitepackages() + os.environ["PYTHONPATH"].split(":") + ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]
found = [p for r in roots if r for p in glob.glob(r + "/**/libcublas.so.1[23]", recursive=True)]
print(next((p for p in found if p.endswith(".12")), found[0] if found else ""))
PYCODE
)
  echo "cuBLAS: ${cublas:-none found}"
  if [ -n "$cublas" ]; then
    lib=$(dirname "$cublas")
    mkdir -p /tmp/cublas12
    if [[ "$cublas" == *.13 ]]; then  # CUDA 13's cuBLAS under the 12 names ran CTranslate2 4.x (NOTES.md)
      ln -sf "$lib/libcublas.so.13" /tmp/cublas12/libcublas.so.12
      ln -sf "$lib/libcublasLt.so.13" /tmp/cublas12/libcublasLt.so.12
    fi
    export LD_LIBRARY_PATH="/tmp/cublas12:$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-/tmp/nv-jit}" CUDA_CACHE_MAXSIZE=4294967296
fi

step "3. bench/bench_gpu.py (budget ${BUDGET} s, killed at ${LIMIT} s)"
timeout "$LIMIT" "$PY" -m bench.bench_gpu --device "$DEVICE" --out "$OUT" --budget-seconds "$BUDGET" "$@"
rc=$?
step "done (exit $rc)"
ls -la "$OUT"
exit "$rc"
