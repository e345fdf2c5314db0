"""The adapter that owns every use of faster-whisper, CTranslate2 and openai-whisper internals:
pinned to the versions it was written for, decoding with each library's own defaults, and
the only module of gpu_container that may import them."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import pytest

from gpu_container.worker import whisper_lib
from tests.architecture.test_layers import LINTER, ROOT, lint_imports


def test_the_installed_libraries_are_the_versions_the_adapter_was_written_for() -> None:
    """A version bump fails here, once, saying what to re-check (not somewhere deep in a
    batch with a renamed private function)."""
    problems = whisper_lib.version_problems()
    assert not problems, "\n".join(problems)
    for name in whisper_lib.WRITTEN_FOR:  # the worker image and the tests install all three
        metadata.version(name)


def test_another_version_fails_with_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {"faster-whisper": "1.3.0", "ctranslate2": "4.8.5", "openai-whisper": "20250625"}
    monkeypatch.setattr(whisper_lib.metadata, "version", installed.__getitem__)
    with pytest.raises(whisper_lib.LibraryVersionError) as raised:
        whisper_lib.check_versions()
    message = str(raised.value)
    assert "faster-whisper 1.3.0 is installed" in message
    assert "written for faster-whisper 1.2.1" in message and "re-check the adapter" in message
    assert "ctranslate2" not in message and "openai-whisper" not in message


@pytest.mark.parametrize("defaults", [whisper_lib.faster_whisper_defaults, whisper_lib.openai_whisper_defaults])
def test_decoding_defaults_are_read_from_the_library(defaults: object) -> None:
    d = defaults()  # type: ignore[operator]
    assert d.temperatures[0] == 0.0 and list(d.temperatures) == sorted(d.temperatures) and len(d.temperatures) > 1
    assert d.compression_ratio_threshold > 1 and d.log_prob_threshold < 0 < d.no_speech_threshold < 1
    assert d.best_of > 1 and d.max_initial_timestamp > 0
    assert "," in d.append_punctuations and "." in d.append_punctuations and "(" in d.prepend_punctuations
    # the guard as the libraries apply it
    assert d.needs_fallback(avg_logprob=-2.0, ratio=1.0, no_speech_prob=0.0)  # unlikely
    assert d.needs_fallback(avg_logprob=-0.2, ratio=9.0, no_speech_prob=0.0)  # a loop
    assert not d.needs_fallback(avg_logprob=-2.0, ratio=1.0, no_speech_prob=0.99)  # silence
    assert d.is_silent(avg_logprob=-2.0, no_speech_prob=0.99)


def test_vad_keeps_pauses_under_two_seconds() -> None:
    """Windows are cut with faster-whisper's own transcribe VAD settings: a pause has to be
    long before it is cut out (the short ones carry the punctuation)."""
    options = whisper_lib.vad_options(30)
    assert options.max_speech_duration_s == 30 and options.min_silence_duration_ms >= 2000


def test_the_contract_catches_a_direct_import_outside_the_adapter(tmp_path: Path) -> None:
    for package in LINTER["root_packages"]:  # every package the contracts name must be importable
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.mp3"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "gpu_container" / "worker" / "batched.py").open("a") as f:
        f.write("\nfrom faster_whisper.tokenizer import _LANGUAGE_CODES  # noqa\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    broken = [line for line in out.stdout.splitlines() if "BROKEN" in line]
    assert any("only the worker's adapter" in line or "libraries BROKEN" in line for line in broken), out.stdout
    assert "gpu_container.worker.batched -> faster_whisper" in out.stdout
