"""The engines and the CTranslate2 -> openai-whisper converter, on the real tiny.en weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpu_container.worker.convert import read_ct2
from gpu_container.worker.engines import openai_checkpoint, resolve_model
from gpu_container.worker.errors import InvalidMedia, NoAudio, TooLong, UnsupportedModel
from gpu_container.worker.media import decode
from harness.audio import SHORT_TEXT, speak

pytestmark = pytest.mark.slow


def test_converted_checkpoint_gives_the_same_greedy_tokens_as_ctranslate2(tmp_path: Path) -> None:
    import ctranslate2
    import torch
    import whisper

    model_dir = resolve_model("tiny.en")
    audio = decode(speak(SHORT_TEXT, tmp_path / "s.wav"), 60).samples
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))

    reference = whisper.load_model(str(openai_checkpoint(model_dir)), device="cpu")
    ours = whisper.decode(
        reference,
        mel,
        whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, temperature=0.0),
    )

    ct2 = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    tokenizer = whisper.tokenizer.get_tokenizer(multilingual=False)
    prompt = [tokenizer.sot, tokenizer.no_timestamps]
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()[None]))
    theirs = ct2.generate(features, [prompt], beam_size=1)[0].sequences_ids[0]

    assert len(ours.tokens) > 10
    assert ours.tokens == theirs


def test_every_tensor_is_mapped(tmp_path: Path) -> None:
    import torch

    model_dir = Path(resolve_model("tiny.en"))
    checkpoint = torch.load(openai_checkpoint(str(model_dir)), map_location="cpu")
    total = sum(v.numel() for v in checkpoint["model_state_dict"].values())
    source = read_ct2(model_dir / "model.bin")
    # every weight of the source (minus the tied projection and the zero key biases) arrives
    expected = sum(v.size for k, v in source.items() if v.ndim >= 1 and "projection" not in k)
    n_key_biases = sum(1 for k in checkpoint["model_state_dict"] if k.endswith("key.weight"))
    assert total == expected - n_key_biases * 384
    assert checkpoint["dims"]["n_vocab"] == 51864 and checkpoint["alignment_heads"]


def test_model_resolution_order(tmp_path: Path) -> None:
    bundled = resolve_model("tiny.en")
    assert (Path(bundled) / "model.bin").exists()
    with pytest.raises(UnsupportedModel):
        resolve_model("medium")
    assert resolve_model("medium", allow_download=True) == "medium"
    with pytest.raises(UnsupportedModel):
        resolve_model("tiny.en", explicit_path=str(tmp_path))
    baked = tmp_path / "baked" / "small"
    baked.mkdir(parents=True)
    (baked / "model.bin").write_bytes(b"x")
    assert resolve_model("small", model_dir=str(tmp_path / "baked")) == str(baked)
    assert resolve_model("tiny.en", explicit_path=bundled) == bundled


# ---- media safety ------------------------------------------------------------------------


def test_concat_and_playlist_demuxers_are_refused(tmp_path: Path) -> None:
    wav = speak("hello there", tmp_path / "a.wav")
    concat = tmp_path / "list.txt"
    concat.write_text(f"ffconcat version 1.0\nfile '{wav}'\n")
    playlist = tmp_path / "x.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{wav}\n#EXT-X-ENDLIST\n")
    for path in (concat, playlist):
        with pytest.raises(InvalidMedia):
            decode(path, 60)


def test_decode_bounds(tmp_path: Path) -> None:
    wav = speak(SHORT_TEXT, tmp_path / "a.wav")
    audio = decode(wav, 60)
    assert audio.samples.dtype == np.float32 and 5 < audio.duration < 20
    with pytest.raises(TooLong):
        decode(wav, 2)
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(InvalidMedia):
        decode(tmp_path / "text.wav", 60)
    with pytest.raises(InvalidMedia):
        decode(tmp_path / "missing.wav", 60)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises((InvalidMedia, NoAudio)):
        decode(tmp_path / "empty.wav", 60)


def test_bake_puts_the_model_where_the_worker_resolves_it(tmp_path: Path) -> None:
    """The image bakes into <out>/<model> and <out>/cache; the worker's model_dir and cache_dir
    settings point there, so the engine finds both without converting or downloading."""
    from gpu_container.worker.bake import bake

    target = bake("tiny.en", "openai-whisper", tmp_path / "models")
    assert (target / "model.bin").exists()
    [checkpoint] = (tmp_path / "models" / "cache").glob("openai-whisper-tiny.en-*.pt")
    assert resolve_model("tiny.en", model_dir=str(tmp_path / "models")) == str(target)
    assert openai_checkpoint(str(target), str(tmp_path / "models" / "cache")) == checkpoint
