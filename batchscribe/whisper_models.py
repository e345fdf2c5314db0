"""The dimensions of the Whisper models by name: the one table the worker's GPU memory model
(gpu_container/worker/gpu_memory.py) and the stack's host sizing can read.

Sources: the Whisper paper (Radford et al. 2022, table 1: layers, width, heads of tiny ...
large) and the checkpoints' `dims` (openai/whisper `ModelDimensions`: 80 mel bins, a vocabulary
of 51,865, 51,864 for `.en`); large-v3 (its model card: 128 mel bins, one more language token:
51,866); large-v3-turbo (its model card: large-v3 with 4 decoder layers); the distil-whisper
model cards (the teacher's encoder, 2 decoder layers; distil-small.en 4). A CTranslate2 model folder holds the same
figures in its model.bin (gpu_container/worker/convert.py `read_dims` reads them; a test holds
the tiny.en here equal to the bundled model's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SAMPLE_RATE = 16_000  # Whisper's input: mono samples a second
WINDOW_SECONDS = 30.0  # one encoder input (the mel frames of a window; shorter audio is padded)
AUDIO_CTX = 1500  # encoder positions: 30 s of log-mel frames after the stride-2 convolution
TEXT_CTX = 448  # decoder positions: the most tokens a window's prompt and output hold


@dataclass(frozen=True)
class WhisperDims:
    """A Whisper model's shape (openai-whisper's ModelDimensions, one width for both halves)."""

    d_model: int  # n_audio_state = n_text_state
    heads: int  # n_audio_head = n_text_head
    encoder_layers: int
    decoder_layers: int
    n_mels: int = 80
    vocab: int = 51865
    audio_ctx: int = AUDIO_CTX
    text_ctx: int = TEXT_CTX

    @property
    def params(self) -> int:
        """Parameters: the convolutions, positional embeddings, each layer's attention (4 d^2,
        the decoder's cross-attention 4 d^2 more) and MLP (8 d^2), the token embedding; layer
        norms and biases are < 0.1 % and left out."""
        d = self.d_model
        encoder = self.n_mels * d * 3 + d * d * 3 + self.audio_ctx * d + self.encoder_layers * 12 * d * d
        decoder = self.vocab * d + self.text_ctx * d + self.decoder_layers * 16 * d * d
        return encoder + decoder


_LARGE = WhisperDims(1280, 20, 32, 32)
_LARGE_V3 = WhisperDims(1280, 20, 32, 32, n_mels=128, vocab=51866)
_TURBO = WhisperDims(1280, 20, 32, 4, n_mels=128, vocab=51866)

WHISPER_DIMS: dict[str, WhisperDims] = {
    "tiny": WhisperDims(384, 6, 4, 4),
    "base": WhisperDims(512, 8, 6, 6),
    "small": WhisperDims(768, 12, 12, 12),
    "medium": WhisperDims(1024, 16, 24, 24),
    "large": _LARGE,
    "large-v1": _LARGE,
    "large-v2": _LARGE,
    "large-v3": _LARGE_V3,
    "large-v3-turbo": _TURBO,
    "turbo": _TURBO,
    "distil-small": WhisperDims(768, 12, 12, 4, vocab=51864),  # 4 decoder layers, not 2
    "distil-medium": WhisperDims(1024, 16, 24, 2, vocab=51864),
    "distil-large-v2": WhisperDims(1280, 20, 32, 2),
    "distil-large-v3": WhisperDims(1280, 20, 32, 2, n_mels=128, vocab=51866),
}
LARGEST = _LARGE_V3


def base_name(model: str) -> str:
    """`Systran/faster-whisper-small.en` -> `small`: the size a model name stands for."""
    return model.rsplit("/", 1)[-1].removeprefix("faster-whisper-").removesuffix(".en")


def whisper_dims(model: str) -> WhisperDims | None:
    """A known model's dimensions by name (`large-v3`, `small.en`, `Systran/faster-whisper-tiny`);
    None for a name not in the table."""
    dims = WHISPER_DIMS.get(base_name(model))
    if dims is not None and model.endswith(".en"):
        return replace(dims, vocab=51864)  # no language tokens but English's
    return dims
