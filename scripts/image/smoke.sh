#!/usr/bin/env bash
# Check a built worker image from the inside, as its own non-root user:
#   scripts/image/smoke.sh cpu|gpu [faster-whisper|openai-whisper]
# Every image: uid 10001, the baked model, HF_HUB_OFFLINE=1, the entrypoint starts the worker
# (which stops at its settings: no queue or table configured). faster-whisper images: no torch.
# CPU: transcribes the bundled sample through the worker's own path (batches.transcribe_file).
# GPU: CTranslate2 imports and the loader finds cuBLAS 12 (no GPU needed for that; running on
# one needs the host's driver).
set -euo pipefail
device="${1:-cpu}"
engine="${2:-faster-whisper}"
case "$engine" in faster-whisper) tag="$device" ;; *) tag="$device-$engine" ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=scripts/image/podman-env.sh
source "$here/podman-env.sh"
image="localhost/batchscribe-worker:$tag"
run() { podman run --rm --network none "$@"; }

echo "== $image: user, model, offline"
# shellcheck disable=SC2016 # expanded inside the container
run --entrypoint sh "$image" -c 'test "$(id -u)" = 10001 && id && echo "model: $BATCHSCRIBE_MODEL ($BATCHSCRIBE_ENGINE) HF_HUB_OFFLINE=$HF_HUB_OFFLINE" && ls /opt/models && ! touch /opt/models/x 2>/dev/null'

echo "== entrypoint (expected to stop at missing settings: one line, exit 78)"
rc=0
out="$(run "$image" 2>&1)" || rc=$?
echo "$out" | tail -n 3
echo "$out" | grep -q -i "TABLE_NAME" || { echo "the worker did not start" >&2; exit 1; }
[ "$rc" = 78 ] || { echo "expected exit 78 (EX_CONFIG), got $rc" >&2; exit 1; }
! echo "$out" | grep -q Traceback || { echo "a traceback instead of one line" >&2; exit 1; }

if [ "$engine" = faster-whisper ]; then
  echo "== no torch"
  run --entrypoint python "$image" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)'
fi

if [ "$device" = cpu ]; then
  # SAMPLE: a media file to transcribe (default: the sample bundled with the CLI)
  sample="${SAMPLE:-}"
  for candidate in "$root/batchscribe_cli/samples/sample.mp3" "$root/batchscribe/samples/sample.mp3"; do
    [ -n "$sample" ] || { [ -f "$candidate" ] && sample="$candidate"; }
  done
  [ -f "$sample" ] || { echo "no sample file (set SAMPLE)" >&2; exit 1; }
  echo "== transcribe $(basename "$sample") (the worker's decode and engine code, the baked model, CPU)"
  run -v "$(realpath "$sample"):/tmp/sample:ro" --entrypoint python "$image" -c "
import os, pathlib, time
from batchscribe.models import JobOptions
from gpu_container.worker.batches import transcribe_file
from gpu_container.worker.engines import load_engine, resolve_model
model, engine, baked = os.environ['BATCHSCRIBE_MODEL'], os.environ['BATCHSCRIBE_ENGINE'], os.environ['BATCHSCRIBE_MODEL_DIR']
# the worker passes its model_dir/cache_dir settings (BATCHSCRIBE_MODEL_DIR/_CACHE_DIR) to the engine
where = {'model_dir': baked}
folder = resolve_model(model, **where)
print('model folder:', folder)
assert folder.startswith(baked), 'not the baked model'
if engine == 'openai-whisper':
    where['cache_dir'] = os.environ['BATCHSCRIBE_CACHE_DIR']
t = time.perf_counter()
e = load_engine(engine, model=model, device='cpu', **where)
# the worker's own path with one job held: windows -> scheduler -> batch runner -> transcript
r = transcribe_file(pathlib.Path('/tmp/sample'), JobOptions(language='en'), e, max_duration_seconds=600)
print(f'{r.duration:.1f} s in {time.perf_counter() - t:.1f} s:', r.text)
assert len(r.text.split()) > 5, r.text
"
else
  echo "== CTranslate2 and the CUDA 12 libraries"
  run --entrypoint python "$image" -c '
import ctypes, ctranslate2, os
print("ctranslate2", ctranslate2.__version__, "CUDA devices:", ctranslate2.get_cuda_device_count())
for name in ("libcublas.so.12", "libcublasLt.so.12"):
    ctypes.CDLL(name)  # what CTranslate2 does: dlopen by soname, through LD_LIBRARY_PATH
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if name in line}
    print(name, "->", ", ".join(sorted(paths)))
'
  echo "== every library in the CUDA wheels finds its own dependencies"
  # shellcheck disable=SC2016 # expanded inside the container
  missing="$(run --entrypoint sh "$image" -c 'for f in /opt/venv/lib/python3.11/site-packages/nvidia/*/lib/*.so*; do ldd "$f" | sed -n "s|^\(.*not found\)|$(basename "$f"): \1|p"; done')"
  if [ -n "$missing" ]; then echo "$missing" >&2; exit 1; fi
  echo "none missing"
fi
echo "== $image: ok"
