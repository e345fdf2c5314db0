"""The one place that touches faster-whisper, CTranslate2 and openai-whisper.

Everything the worker needs of the three libraries goes through here: loading a model,
the VAD that cuts windows, and the batch runners' steps below the libraries' public
`transcribe` (batched log-mel, encoder, `generate`/`DecodingTask` with per-window prompts,
language detection, word alignment). Several of those are private or semi-private names
(`faster_whisper.tokenizer._LANGUAGE_CODES`, `WhisperModel.model.generate` and its keyword
arguments, `add_word_timestamps`, `get_suppressed_tokens`, `DecodingTask._get_audio_features`
and `_detect_language`, `whisper.timing`) that a release may change without notice: so this
module declares the versions it was written for (`WRITTEN_FOR`), a test pins them
(tests/unit/test_whisper_lib.py), and an upgrade fails there with one message.

Decoding defaults (the temperature ladder, the fallback thresholds, the punctuation that
word timestamps attach to words) are read from the libraries' own `transcribe` signatures,
not copied, so the runners decode as each library's own transcribe does.

No other module of gpu_container imports these libraries (an import-linter contract in
pyproject.toml says so). Imports are lazy: a worker loads only its engine's library.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker import features

# library (distribution name) -> the version this adapter was written and tested against
WRITTEN_FOR = {"faster-whisper": "1.2.1", "ctranslate2": "4.8.5", "openai-whisper": "20250625"}

# openai-whisper's command line samples 5 candidates at each fallback temperature
# (whisper/transcribe.py `cli`, --best_of); its Python API leaves best_of unset.
OPENAI_BEST_OF = 5
MEL_CHUNK_ROWS = 32  # windows per torch.stft call in OpenAIWhisperSteps.log_mels


class LibraryVersionError(RuntimeError):
    """An installed library is not the version this adapter was written for."""


def version_problems() -> list[str]:
    """One line per installed library whose version differs from `WRITTEN_FOR`."""
    problems = []
    for name, expected in WRITTEN_FOR.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # not installed: an image without this engine
        if found != expected:
            problems.append(
                f"{name} {found} is installed, but gpu_container/worker/whisper_lib.py was written for "
                f"{name} {expected}: re-check the adapter against {name} {found}'s source "
                f"(the private names and keyword arguments it uses), then update WRITTEN_FOR"
            )
    return problems


def check_versions() -> None:
    problems = version_problems()
    if problems:
        raise LibraryVersionError("; ".join(problems))


@dataclass(frozen=True)
class DecodingDefaults:
    """What a library's own transcribe decodes with, read from its signature."""

    temperatures: tuple[float, ...]
    compression_ratio_threshold: float
    log_prob_threshold: float
    no_speech_threshold: float
    best_of: int
    max_initial_timestamp: float
    prepend_punctuations: str
    append_punctuations: str
    patience: float = 1.0  # beam search (CTranslate2)
    length_penalty: float = 1.0

    def needs_fallback(self, avg_logprob: float, ratio: float, no_speech_prob: float) -> bool:
        """Whisper's guard: a decode that looks like a loop or is unlikely is tried again
        at the next temperature (unless the window is judged silent)."""
        if self.is_silent(avg_logprob, no_speech_prob):
            return False
        return ratio > self.compression_ratio_threshold or avg_logprob < self.log_prob_threshold

    def is_silent(self, avg_logprob: float, no_speech_prob: float) -> bool:
        return no_speech_prob > self.no_speech_threshold and avg_logprob < self.log_prob_threshold


def _defaults(function: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(function).parameters.items()}


@functools.cache
def faster_whisper_defaults() -> DecodingDefaults:
    from faster_whisper import WhisperModel

    d = _defaults(WhisperModel.transcribe)
    return DecodingDefaults(
        temperatures=tuple(d["temperature"]),
        compression_ratio_threshold=d["compression_ratio_threshold"],
        log_prob_threshold=d["log_prob_threshold"],
        no_speech_threshold=d["no_speech_threshold"],
        best_of=d["best_of"],
        max_initial_timestamp=d["max_initial_timestamp"],
        prepend_punctuations=d["prepend_punctuations"],
        append_punctuations=d["append_punctuations"],
        patience=d["patience"],
        length_penalty=d["length_penalty"],
    )


@functools.cache
def openai_whisper_defaults() -> DecodingDefaults:
    import whisper

    d = _defaults(whisper.transcribe)
    return DecodingDefaults(
        temperatures=tuple(d["temperature"]),
        compression_ratio_threshold=d["compression_ratio_threshold"],
        log_prob_threshold=d["logprob_threshold"],
        no_speech_threshold=d["no_speech_threshold"],
        best_of=OPENAI_BEST_OF,
        max_initial_timestamp=_defaults(whisper.DecodingOptions)["max_initial_timestamp"],
        prepend_punctuations=d["prepend_punctuations"],
        append_punctuations=d["append_punctuations"],
    )


# ---- loading models -------------------------------------------------------------------------


# ---- the GPU, as each engine's library sees it (the worker's preflight, preflight.py) ----------


def library_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def ct2_cuda_check(compute_type: str) -> str:
    """The compute type CTranslate2 will use on the GPU (`auto`: float16, as the engine does),
    or RuntimeError when it sees no device or cannot compute in that type there."""
    import ctranslate2

    count = int(ctranslate2.get_cuda_device_count())
    if count == 0:
        raise RuntimeError("CTranslate2 sees no CUDA device (get_cuda_device_count() is 0)")
    wanted = "float16" if compute_type == "auto" else compute_type
    supported = set(ctranslate2.get_supported_compute_types("cuda"))
    if wanted not in supported:
        raise RuntimeError(f"compute type {wanted} is not supported on this GPU (it supports {sorted(supported)})")
    return wanted


def ct2_cuda_kernel() -> None:
    """A tiny CTranslate2 round trip on the GPU: a StorageView copied there, converted to float16
    and back (two kernels of the library's own), and copied back, checked."""
    import ctranslate2

    x = ctranslate2.StorageView.from_array(np.ones((64, 64), np.float32)).to_device(ctranslate2.Device.cuda)
    y = x.to(ctranslate2.DataType.float16).to(ctranslate2.DataType.float32).to_device(ctranslate2.Device.cpu)
    total = float(np.array(y).sum())
    if total != 64 * 64:
        raise RuntimeError(f"a float16 round trip on the GPU summed to {total}, not {64 * 64}")


def torch_cuda_build() -> tuple[str, str | None, list[str]]:
    """(torch's version, the CUDA it was built with or None, its architectures: sm_XY, compute_XY)."""
    import torch

    return str(torch.__version__), torch.version.cuda, list(torch.cuda.get_arch_list())


def torch_cuda_check() -> str:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    return "float16"


def torch_cuda_kernel() -> None:
    """A tiny product on the GPU (a kernel of its own and cuBLAS), checked."""
    import torch

    x = torch.ones(64, 64, device="cuda", dtype=torch.float16)
    total = float((x @ x).sum().item())
    if total != 64**3:
        raise RuntimeError(f"a float16 product on the GPU summed to {total}, not {64**3}")


def load_faster_whisper(ref: str, *, device: str, compute_type: str, cpu_threads: int, replicas: int = 1) -> Any:
    """A faster_whisper.WhisperModel from a model folder (or a name it may download):
    `replicas` CTranslate2 workers sharing the weights (its `num_workers`), each with
    `cpu_threads` threads on a CPU."""
    from faster_whisper import WhisperModel

    return WhisperModel(ref, device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=replicas)


def download_model(model: str, output_dir: str) -> None:
    """faster-whisper's download of a CTranslate2 model (image builds only)."""
    from faster_whisper.utils import download_model as download

    download(model, output_dir=output_dir)


def load_openai_whisper(ref: str, *, device: str, alignment_heads: Sequence[tuple[int, int]] = ()) -> Any:
    """A whisper.model.Whisper from a checkpoint file (or a name it may download); the
    alignment heads a converted checkpoint carries are registered for word timestamps."""
    import torch
    import whisper

    model = whisper.load_model(ref, device=device)
    if alignment_heads:
        dims = model.dims
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model


# ---- VAD (windows.py) -------------------------------------------------------------------------


def vad_options(max_speech_seconds: float) -> Any:
    """faster-whisper's VadOptions as its own transcribe uses them (`vad_filter=True`): a
    pause is cut out only when it is long (min_silence_duration_ms, 2 s), so the model
    still hears the short pauses where commas and full stops go; speech runs are split to
    fit a window."""
    from faster_whisper.vad import VadOptions

    return VadOptions(max_speech_duration_s=max_speech_seconds)


VAD_FRAME = 512  # samples a Silero probability covers (get_speech_timestamps' window_size_samples)
VAD_CONTEXT = 64  # samples of the frame before that each frame is given (SileroVADModel.__call__)
_VAD_BATCH = 10_000  # frames per model call, as SileroVADModel.__call__


class SpeechProbabilities:
    """Silero's speech probability for each 512-sample frame of a stream, every frame computed
    once: the model's state (h, c) and each frame's 64 samples of context carried from one block
    of audio to the next, as faster-whisper's SileroVADModel computes them over a whole file in
    one call (in calls of 10,000 frames, the state carried). A stream's blocks overlap (windows.py
    carries the speech still open into the next block); running get_speech_timestamps on each
    block read that carried audio again, ~25 % more on a 5 min file (its VAD 0.6 s of 7 s).

    `feed` adds audio (`final`: the stream's end, its last frame padded with zeros as
    get_speech_timestamps pads); `probabilities(first, last)` the frames [first, last) computed so
    far; `forget(before)` drops the frames before a frame index."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(VAD_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)  # samples short of a whole frame
        self._probs = np.zeros(0, np.float32)  # frames [self.first, self.frames)
        self.first = 0
        self.frames = 0

    def feed(self, pcm: np.ndarray, final: bool = False) -> None:
        audio = np.concatenate([self._pending, np.asarray(pcm, np.float32)])
        if final:  # as get_speech_timestamps: zeros to the next whole frame (a whole one if none short)
            audio = np.pad(audio, (0, VAD_FRAME - len(audio) % VAD_FRAME))
        n = len(audio) // VAD_FRAME
        self._pending = audio[n * VAD_FRAME :].copy()
        if n == 0:
            return
        frames = audio[: n * VAD_FRAME].reshape(n, VAD_FRAME)
        context = np.concatenate([self._context[None, :], frames[:-1, -VAD_CONTEXT:]])
        batch = np.concatenate([context, frames], axis=1)
        out = []
        for i in range(0, n, _VAD_BATCH):
            probs, self._h, self._c = self._session.run(
                None, {"input": batch[i : i + _VAD_BATCH], "h": self._h, "c": self._c}
            )
            out.append(np.asarray(probs, np.float32).reshape(-1))
        self._context = frames[-1, -VAD_CONTEXT:].copy()
        self._probs = np.concatenate([self._probs, *out])
        self.frames += n

    def probabilities(self, first: int, last: int) -> np.ndarray:
        return self._probs[max(0, first - self.first) : max(0, last - self.first)]

    def forget(self, before: int) -> None:
        if before > self.first:
            self._probs = self._probs[before - self.first :].copy()
            self.first = before


def speech_from_probabilities(probs: np.ndarray, length: int, options: Any) -> list[tuple[int, int]]:
    """Speech (start, end) sample ranges in `length` samples of audio whose frames' Silero
    probabilities are `probs`: faster_whisper.vad.get_speech_timestamps (1.2.1) after its model
    call, line for line (its thresholds, the split of speech longer than max_speech_duration_s at
    its last pause, the padding)."""
    rate, frame = SAMPLE_RATE, VAD_FRAME
    threshold = options.threshold
    neg_threshold = options.neg_threshold if options.neg_threshold is not None else max(threshold - 0.15, 0.01)
    min_speech_samples = rate * options.min_speech_duration_ms / 1000
    speech_pad_samples = rate * options.speech_pad_ms / 1000
    max_speech_samples = rate * options.max_speech_duration_s - frame - 2 * speech_pad_samples
    min_silence_samples = rate * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = rate * 98 / 1000
    triggered = False
    speeches: list[dict[str, float]] = []
    current: dict[str, float] = {}
    temp_end = 0
    prev_end = next_start = 0
    for i, prob in enumerate(probs.tolist()):
        at = frame * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = at
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = at
            continue
        if triggered and at - current["start"] > max_speech_samples:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:  # reached silence before and is still not speech
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = at
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if at - temp_end < min_silence_samples:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech_samples:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
    if current and length - current["start"] > min_speech_samples:
        current["end"] = length
        speeches.append(current)
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - speech_pad_samples))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * speech_pad_samples:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(length, speech["end"] + speech_pad_samples))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - speech_pad_samples))
        else:
            speech["end"] = int(min(length, speech["end"] + speech_pad_samples))
    return [(int(s["start"]), int(s["end"])) for s in speeches]


# ---- faster-whisper's steps, for the batch runner ---------------------------------------------


@dataclass(frozen=True)
class Generated:
    """One decode of one window: tokens (timestamps included), average log-probability
    (recovered from CTranslate2's length-normalised score, as faster-whisper does), and the
    no-speech probability."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float


CPU_ENCODE_ROWS = 2  # windows the encoder reads at once on a CPU (FasterWhisperSteps.encode)


class FasterWhisperSteps:
    """The steps of faster-whisper's transcribe over a loaded WhisperModel, taken apart so
    that a batch of windows of different jobs (with their own prompts, languages and
    tasks) runs through one encoder call and one `generate` per prompt length."""

    def __init__(self, model: Any) -> None:
        self.model = model
        fe = model.feature_extractor
        self.sampling_rate: int = fe.sampling_rate
        self.chunk_length: float = fe.chunk_length
        self.nb_max_frames: int = fe.nb_max_frames
        self.frames_per_second: float = model.frames_per_second
        self.time_precision: float = model.time_precision
        self.max_length: int = model.max_length
        self.multilingual: bool = model.model.is_multilingual
        self.device: str = str(getattr(model.model, "device", "cpu"))
        self._tokenizers: dict[tuple[str, str], Any] = {}
        self._mel = features.MelSpec(np.asarray(fe.mel_filters, np.float32), self.device)

    @property
    def language_codes(self) -> frozenset[str]:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return frozenset(_LANGUAGE_CODES)

    def tokenizer(self, language: str, task: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=task, language=language)
        return self._tokenizers[key]

    def features(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Log-mel features of each window, padded to 30 s, as one batch: all windows in one
        vectorized call (features.log_mel_batch; torch on a CUDA device where torch is
        installed), equal to the library's extractor run window by window."""
        fe = self.model.feature_extractor
        if (fe.n_fft, fe.hop_length, fe.sampling_rate) != (features.N_FFT, features.HOP, SAMPLE_RATE):
            return self.features_per_window(audios)  # a model with other STFT settings: the library's own
        return features.log_mel_batch(audios, self._mel)

    def features_per_window(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """The library's own extractor, one window at a time (the reference features match)."""
        from faster_whisper.audio import pad_or_trim

        fe = self.model.feature_extractor
        return np.stack([pad_or_trim(fe(audio)[..., :-1]) for audio in audios])

    def prompt(self, tokenizer: Any, previous: list[int], *, timestamps: bool = True) -> list[int]:
        """The decoder prompt: previous text (an initial prompt), then the start sequence,
        with timestamp tokens on or off (`<|notimestamps|>`)."""
        return list(self.model.get_prompt(tokenizer, previous, without_timestamps=not timestamps))

    def encode(self, features: np.ndarray) -> Any:
        """The encoder's output for a batch of features. On a CPU, CPU_ENCODE_ROWS windows at a
        time, joined into one output: the encoder's self-attention holds every row's scores at
        once (tiny: 6 heads x 1500 x 1500 float32, ~54 MB a row), so a batch of 8 encoded
        together peaked ~440 MB over one encoded by 2, with no gain in time per row."""
        if self.device != "cpu" or len(features) <= CPU_ENCODE_ROWS:
            return self.model.encode(features)
        import ctranslate2

        parts = [
            np.asarray(self.model.encode(features[i : i + CPU_ENCODE_ROWS]))
            for i in range(0, len(features), CPU_ENCODE_ROWS)
        ]
        return ctranslate2.StorageView.from_array(np.concatenate(parts))

    def encoded_rows(self, encoder_output: Any, features: np.ndarray, rows: list[int]) -> Any:
        """The encoder's output for some rows of a batch decoded again (a fallback): on a CPU
        those rows of `encoder_output` (a copy in host memory, ~2 MB a row for tiny, no encoder
        work), elsewhere `features[rows]` encoded again (the output lives on the device)."""
        if self.device != "cpu":
            return self.encode(features[rows])
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.asarray(encoder_output)[rows])  # a new C-contiguous array

    def detect_languages(self, encoder_output: Any) -> list[str]:
        return [str(found[0][0][2:-2]) for found in self.model.model.detect_language(encoder_output)]

    def generate(
        self,
        encoder_output: Any,
        prompts: list[list[int]],
        tokenizer: Any,
        *,
        temperature: float,
        beam_size: int,
        defaults: DecodingDefaults,
        max_new_tokens: int | None = None,
    ) -> list[Generated]:
        """One CTranslate2 `generate` over the batch, with the keyword arguments faster-
        whisper's own transcribe passes (suppressed tokens, blank suppression, the
        initial-timestamp limit; beam search at temperature 0, best-of sampling above)."""
        from faster_whisper.transcribe import get_suppressed_tokens

        sampling: dict[str, Any] = (
            {"beam_size": beam_size, "patience": defaults.patience}
            if temperature == 0
            else {
                "beam_size": 1,
                "num_hypotheses": defaults.best_of,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
        )
        limit = self.max_length if max_new_tokens is None else min(self.max_length, len(prompts[0]) + max_new_tokens)
        outputs = self.model.model.generate(
            encoder_output,
            prompts,
            length_penalty=defaults.length_penalty,
            max_length=limit,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            max_initial_timestamp_index=round(defaults.max_initial_timestamp / self.time_precision),
            **sampling,
        )
        out = []
        for result in outputs:
            tokens = list(result.sequences_ids[0])
            out.append(
                Generated(
                    tokens=tokens,
                    avg_logprob=float(result.scores[0] * len(tokens) ** defaults.length_penalty / (len(tokens) + 1)),
                    no_speech_prob=float(result.no_speech_prob),
                )
            )
        return out

    def add_word_timestamps(
        self,
        segments: list[list[dict[str, Any]]],
        tokenizer: Any,
        encoder_output: Any,
        frames: list[int],
        defaults: DecodingDefaults,
    ) -> None:
        """faster-whisper's word alignment: `segments[i]` are window i's pieces (`seek`,
        `start`, `end`, `tokens`); each gets `words` and aligned start/end."""
        self.model.add_word_timestamps(
            segments,
            tokenizer,
            encoder_output,
            frames,
            defaults.prepend_punctuations,
            defaults.append_punctuations,
            0.0,
        )


# ---- openai-whisper's steps, for the batch runner ---------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """One openai-whisper decode of one window."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    text: str
    compression_ratio: float
    language: str


def batched_timestamp_rules(tokenizer: Any, sample_begin: int, max_initial_timestamp_index: int | None) -> Any:
    """whisper.decoding.ApplyTimestampRules with its two loops over the rows as tensor ops over
    the whole batch: the same rules, the same masks, with no Python loop over rows and no value
    read back to the host per step (openai-whisper 20250625 loops every row with `.tolist()` and
    compares tensors in `if`, a GPU->CPU sync per row and step)."""
    from whisper.decoding import ApplyTimestampRules

    class BatchedTimestampRules(ApplyTimestampRules):
        def apply(self, logits: Any, tokens: Any) -> None:
            _timestamp_rules(logits, tokens, self.tokenizer, self.sample_begin, self.max_initial_timestamp_index)

    return BatchedTimestampRules(tokenizer, sample_begin, max_initial_timestamp_index)


def _timestamp_rules(logits: Any, tokens: Any, tokenizer: Any, sample_begin: int, max_initial: int | None) -> None:
    """The rules of ApplyTimestampRules.apply (whisper/decoding.py ~452-507), on every row at
    once. Each rule masks a range of a row: text ranges as a row mask over the text columns,
    timestamp ranges on the 1,501 timestamp columns only, so no mask is as large as the logits."""
    import torch

    begin, eot, inf = tokenizer.timestamp_begin, tokenizer.eot, -np.inf
    if tokenizer.no_timestamps is not None:
        logits[:, tokenizer.no_timestamps] = inf
    sampled = tokens[:, sample_begin:]
    if sampled.shape[1] > 0:
        is_stamp = sampled >= begin
        last = is_stamp[:, -1:]
        penultimate = is_stamp[:, -2:-1] if sampled.shape[1] > 1 else torch.ones_like(last)
        # the last timestamp (by position), and the lowest one allowed next: no going back, and
        # a segment has a nonzero length (the same one only to close a pair)
        positions = torch.arange(sampled.shape[1], device=sampled.device)
        at = torch.where(is_stamp, positions, -1).amax(dim=1, keepdim=True)
        stamp = sampled.gather(1, at.clamp(min=0))
        bound = torch.where(last & ~penultimate, stamp, stamp + 1)
        ids = torch.arange(begin, logits.shape[-1], device=logits.device)[None, :]
        # timestamps come in pairs: after a pair (or one at the start) text follows ...
        logits[:, begin:].masked_fill_((last & penultimate) | ((at >= 0) & (ids < bound)), inf)
        logits[:, :eot].masked_fill_(last & ~penultimate, inf)  # ... after text and one, no text
    if tokens.shape[1] == sample_begin:
        logits[:, :begin] = inf  # no text before the first timestamp
        if max_initial is not None:
            logits[:, begin + max_initial + 1 :] = inf
    # where the timestamps' total probability beats every text token, sample a timestamp
    logprobs = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    stamps_win = logprobs[:, begin:].logsumexp(dim=-1) > logprobs[:, :begin].amax(dim=-1)
    logits[:, :begin].masked_fill_(stamps_win[:, None], inf)


def _decoding_task(model: Any, options: Any, batched_rules: bool = True) -> Any:
    """whisper.decoding.DecodingTask for a batch of encoded windows. openai-whisper
    20250625 repeats the tokens, not the audio features, for beam search and best-of, which
    only broadcasts for a batch of one; this subclass repeats the features too. With
    `batched_rules`, its timestamp rules run over the batch at once (`batched_timestamp_rules`)."""
    from whisper.decoding import ApplyTimestampRules, DecodingTask

    class BatchedDecodingTask(DecodingTask):
        def __init__(self, model: Any, options: Any) -> None:
            super().__init__(model, options)
            if batched_rules:
                filters: list[Any] = getattr(self, "logit_filters")  # noqa: B009 (whisper is untyped)
                self.logit_filters = [
                    batched_timestamp_rules(f.tokenizer, f.sample_begin, f.max_initial_timestamp_index)
                    if isinstance(f, ApplyTimestampRules)
                    else f
                    for f in filters
                ]

        def _get_audio_features(self, mel: Any) -> Any:
            features = super()._get_audio_features(mel)
            return features.repeat_interleave(self.n_group, dim=0) if self.n_group > 1 else features

        def _detect_language(self, audio_features: Any, tokens: Any) -> Any:
            return super()._detect_language(audio_features[:: self.n_group], tokens)

    return BatchedDecodingTask(model, options)


class OpenAIWhisperSteps:
    """openai-whisper's transcribe steps over a loaded whisper.model.Whisper, for a batch."""

    def __init__(self, model: Any, *, fp16: bool, batched_rules: bool = True) -> None:
        from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE

        self.model = model
        self.fp16 = fp16
        self.batched_rules = batched_rules  # False: the library's own per-row timestamp rules
        self.sampling_rate: int = SAMPLE_RATE
        self.chunk_length: float = CHUNK_LENGTH
        self.multilingual: bool = model.is_multilingual

    @property
    def language_codes(self) -> frozenset[str]:
        from whisper.tokenizer import LANGUAGES

        return frozenset(LANGUAGES)

    def tokenizer(self, language: str, task: str) -> Any:
        from whisper.tokenizer import get_tokenizer

        return get_tokenizer(self.multilingual, num_languages=self.model.num_languages, language=language, task=task)

    def log_mels(self, audios: Sequence[np.ndarray]) -> tuple[Any, list[int]]:
        """The windows' log-mel spectrograms as one batch, each cut and padded as
        whisper.transcribe cuts a 30 s window, and the frames of real audio in each: one
        `torch.stft` over all windows (zero-padded to one length), equal to whisper's
        log_mel_spectrogram window by window (`log_mels_per_window`)."""
        import torch
        from whisper.audio import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, mel_filters

        dtype = torch.float16 if self.fp16 else torch.float32
        if len(audios) > MEL_CHUNK_ROWS:  # bounds the spectra held at once (~150 MB a chunk)
            parts = [self.log_mels(audios[i : i + MEL_CHUNK_ROWS]) for i in range(0, len(audios), MEL_CHUNK_ROWS)]
            return torch.cat([p[0] for p in parts]), [f for p in parts for f in p[1]]
        device = self.model.device
        # whisper pads 30 s of zeros; frames wholly in zeros sit at the floor (-10 before
        # scaling) and never raise a window's maximum, so 3 hops past the longest window do
        width = max(max(len(a) for a in audios) + 3 * HOP_LENGTH, N_SAMPLES)
        rows = torch.zeros(len(audios), width)
        for row, audio in zip(rows, audios, strict=True):
            row[: len(audio)] = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
        with torch.no_grad():
            x = rows.to(device)
            stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=x.device),
                              return_complex=True)[..., :-1]  # fmt: skip
            log_spec = torch.clamp(mel_filters(x.device, self.model.dims.n_mels) @ stft.abs() ** 2, min=1e-10).log10()
            peak = log_spec.amax(dim=(1, 2))
            log_spec = (torch.maximum(log_spec, (peak - 8.0)[:, None, None]) + 4.0) / 4.0
            content = [min(N_FRAMES, len(a) // HOP_LENGTH) for a in audios]
            kept = (
                torch.arange(log_spec.shape[-1], device=x.device)[None, :]
                < torch.tensor(content, device=x.device)[:, None]
            )
            mels = (log_spec * kept[:, None, :])[..., :N_FRAMES]
        return mels.to(dtype), [max(1, c) for c in content]

    def log_mels_per_window(self, audios: Sequence[np.ndarray]) -> tuple[Any, list[int]]:
        """whisper's own log_mel_spectrogram, one window at a time (what `log_mels` equals)."""
        import torch
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

        dtype = torch.float16 if self.fp16 else torch.float32
        mels, frames = [], []
        for audio in audios:
            samples = torch.from_numpy(np.ascontiguousarray(audio)).to(self.model.device)
            mel = log_mel_spectrogram(samples, self.model.dims.n_mels, padding=N_SAMPLES)
            content = min(N_FRAMES, mel.shape[-1] - N_FRAMES)
            mels.append(pad_or_trim(mel[:, :content], N_FRAMES).to(dtype))
            frames.append(max(1, content))
        return torch.stack(mels), frames

    def embed(self, mel_batch: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.model.embed_audio(mel_batch)

    def decode(
        self,
        features: Any,
        *,
        language: str | None,
        task: str,
        prompt: str | None,
        temperature: float,
        beam_size: int | None,
        defaults: DecodingDefaults,
        max_new_tokens: int | None = None,
    ) -> list[Decoded]:
        """whisper's DecodingTask on encoded windows (what `model.decode` runs), timestamps on."""
        import torch
        import whisper

        options = whisper.DecodingOptions(
            task=task,
            language=language,
            temperature=temperature,
            beam_size=beam_size if temperature == 0 else None,
            best_of=defaults.best_of if temperature > 0 else None,
            prompt=prompt,
            without_timestamps=False,
            max_initial_timestamp=defaults.max_initial_timestamp,
            fp16=self.fp16,
            sample_len=max_new_tokens,
        )
        with torch.no_grad():
            results = _decoding_task(self.model, options, self.batched_rules).run(features)
        return [
            Decoded(
                tokens=list(r.tokens),
                avg_logprob=float(r.avg_logprob),
                no_speech_prob=float(r.no_speech_prob),
                text=r.text,
                compression_ratio=float(r.compression_ratio),
                language=r.language,
            )
            for r in results
        ]

    def add_word_timestamps(
        self, pieces: list[dict[str, Any]], tokenizer: Any, mel: Any, frames: int, defaults: DecodingDefaults
    ) -> None:
        """whisper.timing's word alignment for one window's pieces (it runs the model on
        that window's mel again)."""
        from whisper.timing import add_word_timestamps

        for piece in pieces:
            piece["seek"] = 0
        add_word_timestamps(
            segments=pieces,
            model=self.model,
            tokenizer=tokenizer,
            mel=mel,
            num_frames=frames,
            prepend_punctuations=defaults.prepend_punctuations,
            append_punctuations=defaults.append_punctuations,
            last_speech_timestamp=0.0,
        )


# ---- the libraries' own transcribe: a reference for benchmarks and tests, never the worker's path


def library_transcribe(
    engine: Any, audio: np.ndarray, *, language: str | None = None, batch_size: int = 0, word_timestamps: bool = False
) -> str:
    """The text a library's own `transcribe` gives for `audio` with the engine's model and
    beam size: faster-whisper's WhisperModel.transcribe with its VAD filter (`batch_size` >
    0: its BatchedInferencePipeline), or openai-whisper's whisper.transcribe; conditioned on
    the previous text within one 30 s window only (past it, on repetitive speech, that made
    them skip sentences: NOTES.md). Benchmarks and tests compare the worker's path with it.
    `word_timestamps`: the library's word alignment too (faster-whisper only)."""
    one_window = len(audio) <= 30 * SAMPLE_RATE
    if engine.name == "faster-whisper":
        from faster_whisper import BatchedInferencePipeline

        kwargs: dict[str, Any] = {
            "language": language,
            "beam_size": engine.beam_size,
            "vad_filter": True,
            "word_timestamps": word_timestamps,
        }
        if batch_size:
            segments, _ = BatchedInferencePipeline(engine.model).transcribe(audio, batch_size=batch_size, **kwargs)
        else:
            segments, _ = engine.model.transcribe(audio, condition_on_previous_text=one_window, **kwargs)
        return " ".join(s.text.strip() for s in segments)
    import whisper

    beam = {"beam_size": engine.beam_size} if engine.beam_size and engine.beam_size > 1 else {}
    result = whisper.transcribe(
        engine.model,
        audio,
        verbose=None,
        language=language,
        fp16=engine.device == "cuda",
        condition_on_previous_text=one_window,
        **beam,
    )
    return " ".join(str(s["text"]).strip() for s in result["segments"])
