"""Whisper models for the GPU benchmark without downloading weights: random weights with the real
dimensions, one set of them for both engines.

`torch_model` builds openai-whisper's `Whisper` of a shape on the device, as `whisper.load_model`
leaves a checkpoint (fp32 weights, cast per call to fp16 on CUDA) or, with `fp16_weights`, in
fp16 as shared/gpu-reference/shape_bench_torch.py measures it. Its initialisation is
PyTorch's own (token embeddings N(0, 1), as openai-whisper's), so decoding random audio runs
on for about as many tokens as it is asked for. `ct2_folder` writes the same weights as a
CTranslate2 model folder that faster_whisper.WhisperModel loads offline: model.bin through
CTranslate2's own Whisper spec (the inverse of gpu_container/worker/convert.py's mapping), a
vocabulary and a word-level tokenizer.json with the special tokens at openai-whisper's ids,
and the mel bins in preprocessor_config.json. Both engines then hold the same model (a unit
test reads the folder back through convert.py and finds the torch weights exactly).

The text tokens are placeholders (`t123`): transcripts of random weights are noise anyway;
only their count and the special tokens' places matter. So the two engines' tokenizers differ
on text (which symbols each suppresses), and their greedy tokens need not agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                 n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
    "large-v3-turbo": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                           n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=4),
    "large-v3": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                     n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32),
}  # fmt: skip


def torch_model(shape: str, device: str, *, fp16_weights: bool = False, seed: int = 0) -> Any:
    """openai-whisper's model of `shape` with random weights, built on `device`."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    with torch.device(device):
        model = Whisper(ModelDimensions(**SHAPES[shape]))
        # the one parameter Whisper leaves uninitialised (torch.empty): a checkpoint always sets it
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    model.eval()
    if fp16_weights:  # LayerNorm stays fp32, as whisper's LayerNorm computes in fp32
        model.half()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.float()
    return model


def _special_tokens(n_vocab: int) -> tuple[dict[str, int], int]:
    """openai-whisper's special tokens and their ids for a vocabulary of `n_vocab`, and the
    number of languages (English-only models: 51864 tokens, the gpt2 encoding)."""
    from whisper.tokenizer import get_encoding

    multilingual = n_vocab >= 51865
    languages = n_vocab - 51765 - int(multilingual)
    encoding = get_encoding("multilingual" if multilingual else "gpt2", num_languages=languages)
    if encoding.n_vocab != n_vocab:
        raise ValueError(f"no openai-whisper vocabulary has {n_vocab} tokens")
    return dict(encoding._special_tokens), languages


def vocabulary(n_vocab: int) -> list[str]:
    """Placeholder text tokens, and openai-whisper's special tokens at their ids."""
    specials, _ = _special_tokens(n_vocab)
    tokens = [f"t{i}" for i in range(n_vocab)]
    for name, token_id in specials.items():
        tokens[token_id] = name
    return tokens


def _tokenizer_json(tokens: list[str], path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def _array(tensor: Any, dtype: Any) -> np.ndarray:
    """A tensor as a numpy array of `dtype` (cast on its device first: less to copy)."""
    import torch

    wanted = torch.float16 if dtype == np.float16 else torch.float32
    return np.ascontiguousarray(tensor.detach().to(dtype=wanted).cpu().numpy())


def _linear(spec: Any, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    spec.weight = weight
    if bias is not None:
        spec.bias = bias


def _fused(spec: Any, parts: list[Any], dtype: Any) -> None:
    """Linear layers fused into one (CTranslate2's q/k/v): a missing bias (key) is zeros."""
    weights = [_array(p.weight, dtype) for p in parts]
    biases = [
        _array(p.bias, dtype) if p.bias is not None else np.zeros(w.shape[0], dtype)
        for p, w in zip(parts, weights, strict=True)
    ]
    _linear(spec, np.concatenate(weights), np.concatenate(biases))


def _norm(spec: Any, module: Any, dtype: Any) -> None:
    spec.gamma, spec.beta = _array(module.weight, dtype), _array(module.bias, dtype)


def _mlp(spec: Any, block: Any, dtype: Any) -> None:
    _linear(spec.linear_0, _array(block.mlp[0].weight, dtype), _array(block.mlp[0].bias, dtype))
    _linear(spec.linear_1, _array(block.mlp[2].weight, dtype), _array(block.mlp[2].bias, dtype))
    _norm(spec.layer_norm, block.mlp_ln, dtype)


def _self_attention(spec: Any, block: Any, dtype: Any) -> None:
    attn = block.attn
    _fused(spec.linear[0], [attn.query, attn.key, attn.value], dtype)
    _linear(spec.linear[1], _array(attn.out.weight, dtype), _array(attn.out.bias, dtype))
    _norm(spec.layer_norm, block.attn_ln, dtype)


def _whisper_spec(model: Any, dtype: Any) -> Any:
    """CTranslate2's WhisperSpec holding `model`'s weights."""
    from ctranslate2.specs import whisper_spec

    d = model.dims
    spec = whisper_spec.WhisperSpec(d.n_audio_layer, d.n_audio_head, d.n_text_layer, d.n_text_head)
    enc, dec = model.encoder, model.decoder
    for name in ("conv1", "conv2"):
        conv = getattr(enc, name)
        _linear(getattr(spec.encoder, name), _array(conv.weight, dtype), _array(conv.bias, dtype))
    spec.encoder.position_encodings.encodings = _array(enc.positional_embedding, dtype)
    for layer, block in zip(spec.encoder.layer, enc.blocks, strict=True):
        _self_attention(layer.self_attention, block, dtype)
        _mlp(layer.ffn, block, dtype)
    _norm(spec.encoder.layer_norm, enc.ln_post, dtype)
    embeddings = _array(dec.token_embedding.weight, dtype)
    spec.decoder.embeddings.weight = embeddings
    spec.decoder.projection.weight = embeddings  # tied, as in Whisper: saved once, aliased
    spec.decoder.position_encodings.encodings = _array(dec.positional_embedding, dtype)
    for layer, block in zip(spec.decoder.layer, dec.blocks, strict=True):
        _self_attention(layer.self_attention, block, dtype)
        cross = block.cross_attn
        _linear(layer.attention.linear[0], _array(cross.query.weight, dtype), _array(cross.query.bias, dtype))
        _fused(layer.attention.linear[1], [cross.key, cross.value], dtype)
        _linear(layer.attention.linear[2], _array(cross.out.weight, dtype), _array(cross.out.bias, dtype))
        _norm(layer.attention.layer_norm, block.cross_attn_ln, dtype)
        _mlp(layer.ffn, block, dtype)
    _norm(spec.decoder.layer_norm, dec.ln, dtype)
    return spec


def ct2_folder(model: Any, folder: Path, *, quantization: str) -> Path:
    """`model`'s weights as a CTranslate2 model folder faster-whisper loads offline."""
    d = model.dims
    tokens = vocabulary(d.n_vocab)
    specials, _ = _special_tokens(d.n_vocab)
    dtype = np.float16 if quantization == "float16" else np.float32
    spec = _whisper_spec(model, dtype)
    spec.register_vocabulary(tokens)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [220, specials["<|endoftext|>"]]
    spec.config.lang_ids = sorted(i for t, i in specials.items() if t[2:-2] in _language_codes())
    spec.config.alignment_heads = [(layer, h) for layer in range(d.n_text_layer // 2, d.n_text_layer)
                                   for h in range(d.n_text_head)]  # fmt: skip
    spec.validate()
    spec.optimize(quantization=quantization)
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    _tokenizer_json(tokens, folder / "tokenizer.json")
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_size": d.n_mels}))
    return folder


def _language_codes() -> set[str]:
    from whisper.tokenizer import LANGUAGES

    return set(LANGUAGES)


def faster_whisper_model(folder: Path, device: str, compute_type: str) -> Any:
    """faster_whisper.WhisperModel over a folder written by `ct2_folder`, as the worker loads one."""
    from gpu_container.worker import whisper_lib

    return whisper_lib.load_faster_whisper(str(folder), device=device, compute_type=compute_type, cpu_threads=0)
