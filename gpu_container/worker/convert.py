"""Rebuild an openai-whisper (PyTorch) checkpoint from a CTranslate2 Whisper model.

openai-whisper downloads its checkpoints at run time, which this project never does. The
CTranslate2 model (the one faster-whisper uses, shipped offline) holds the same weights:
`model.bin` is a version, the model name, a revision, then named tensors (name, rank,
dims, dtype, bytes) and finally aliases. Whisper's fused self-attention q/k/v weights are
split back into query/key/value (key has no bias); the cross-attention's fused k/v likewise.
A float16 model converts losslessly.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from batchscribe.whisper_models import WhisperDims

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")


@dataclass(frozen=True)
class _Ct2File:
    shapes: dict[str, tuple[int, ...]]  # every tensor's
    data: dict[str, np.ndarray]  # the tensors read
    aliases: dict[str, str]  # alias -> tensor name


def _read(path: Path, keep: Callable[[str], bool]) -> _Ct2File:
    """A CTranslate2 Whisper model.bin: every tensor's shape, the data of those `keep` names
    (the others' bytes are skipped, not read), and the aliases."""
    out = _Ct2File({}, {}, {})
    with path.open("rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if version < 5:
            raise ValueError(f"unsupported CTranslate2 model version {version}")
        name = _string(f)
        if name != "WhisperSpec":
            raise ValueError(f"{path} is a {name}, not a Whisper model")
        f.read(4)  # revision
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            var = _string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            (dtype_id,) = struct.unpack("<B", f.read(1))
            (nbytes,) = struct.unpack("<I", f.read(4))
            out.shapes[var] = dims
            if not keep(var):
                f.seek(nbytes, 1)
                continue
            if dtype_id not in _DTYPES:
                raise ValueError(f"{var}: dtype {dtype_id} (quantized models cannot be converted)")
            out.data[var] = np.frombuffer(f.read(nbytes), dtype=_DTYPES[dtype_id]).reshape(dims)
        (aliases,) = struct.unpack("<I", f.read(4))
        for _ in range(aliases):
            alias, target = _string(f), _string(f)
            out.aliases[alias] = target
    return out


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """All named tensors of a CTranslate2 model.bin (aliases resolved)."""
    model = _read(path, lambda _name: True)
    return model.data | {alias: model.data[target] for alias, target in model.aliases.items()}


def _whisper_dims(shapes: dict[str, tuple[int, ...]], scalars: dict[str, int]) -> WhisperDims:
    enc, dec = shapes["encoder/position_encodings/encodings"], shapes["decoder/position_encodings/encodings"]
    return WhisperDims(
        d_model=enc[1],
        heads=scalars["encoder/num_heads"],
        encoder_layers=_layers(shapes, "encoder"),
        decoder_layers=_layers(shapes, "decoder"),
        n_mels=shapes["encoder/conv1/weight"][1],
        vocab=shapes["decoder/embeddings/weight"][0],
        audio_ctx=enc[0],
        text_ctx=dec[0],
    )


def read_dims(model_dir: Path) -> WhisperDims:
    """A CTranslate2 Whisper model's dimensions from its model.bin, reading only the tensors'
    headers and the head counts (a large model's weights are skipped, not read)."""
    model = _read(model_dir / "model.bin", lambda name: name.endswith("/num_heads"))
    return _whisper_dims(model.shapes, {name: int(v) for name, v in model.data.items()})


def _layers(t: Mapping[str, object], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in t if (m := pattern.match(name)))


def _split(weight: np.ndarray, parts: int) -> list[np.ndarray]:
    return list(np.split(weight, parts, axis=0))


def _mapping(t: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    def ln(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{dst}.weight", t[f"{src}/gamma"]
        yield f"{dst}.bias", t[f"{src}/beta"]

    def linear(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{dst}.weight", t[f"{src}/weight"]
        yield f"{dst}.bias", t[f"{src}/bias"]

    def self_attention(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        q, k, v = _split(t[f"{src}/linear_0/weight"], 3)
        qb, _, vb = _split(t[f"{src}/linear_0/bias"], 3)
        yield from (
            (f"{dst}.query.weight", q),
            (f"{dst}.query.bias", qb),
            (f"{dst}.key.weight", k),
            (f"{dst}.value.weight", v),
            (f"{dst}.value.bias", vb),
        )
        yield from linear(f"{src}/linear_1", f"{dst}.out")

    def cross_attention(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from linear(f"{src}/linear_0", f"{dst}.query")
        k, v = _split(t[f"{src}/linear_1/weight"], 2)
        _, vb = _split(t[f"{src}/linear_1/bias"], 2)
        yield from ((f"{dst}.key.weight", k), (f"{dst}.value.weight", v), (f"{dst}.value.bias", vb))
        yield from linear(f"{src}/linear_2", f"{dst}.out")

    def mlp(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from linear(f"{src}/linear_0", f"{dst}.mlp.0")
        yield from linear(f"{src}/linear_1", f"{dst}.mlp.2")
        yield from ln(f"{src}/layer_norm", f"{dst}.mlp_ln")

    yield from linear("encoder/conv1", "encoder.conv1")
    yield from linear("encoder/conv2", "encoder.conv2")
    yield "encoder.positional_embedding", t["encoder/position_encodings/encodings"]
    for i in range(_layers(t, "encoder")):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from self_attention(f"{src}/self_attention", f"{dst}.attn")
        yield from ln(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from mlp(f"{src}/ffn", dst)
    yield from ln("encoder/layer_norm", "encoder.ln_post")

    yield "decoder.token_embedding.weight", t["decoder/embeddings/weight"]
    yield "decoder.positional_embedding", t["decoder/position_encodings/encodings"]
    for i in range(_layers(t, "decoder")):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from self_attention(f"{src}/self_attention", f"{dst}.attn")
        yield from ln(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from cross_attention(f"{src}/attention", f"{dst}.cross_attn")
        yield from ln(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from mlp(f"{src}/ffn", dst)
    yield from ln("decoder/layer_norm", "decoder.ln")


def convert(model_dir: Path, out: Path) -> Path:
    """Write an openai-whisper checkpoint (`{"dims", "model_state_dict", "alignment_heads"}`)."""
    import torch

    t = read_ct2(model_dir / "model.bin")
    d = _whisper_dims({name: v.shape for name, v in t.items()}, {"encoder/num_heads": int(t["encoder/num_heads"])})
    dims = {
        "n_mels": d.n_mels,
        "n_audio_ctx": d.audio_ctx,
        "n_audio_state": d.d_model,
        "n_audio_head": d.heads,
        "n_audio_layer": d.encoder_layers,
        "n_vocab": d.vocab,
        "n_text_ctx": d.text_ctx,
        "n_text_state": d.d_model,
        "n_text_head": int(t["decoder/num_heads"]),
        "n_text_layer": d.decoder_layers,
    }
    state = {name: torch.from_numpy(np.array(value, dtype=np.float16)) for name, value in _mapping(t)}
    config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
    checkpoint = {
        "dims": dims,
        "model_state_dict": state,
        "alignment_heads": [list(pair) for pair in config.get("alignment_heads", [])],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(out)
    return out


if __name__ == "__main__":
    import sys

    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    print(convert(src, dst))
