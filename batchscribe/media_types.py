"""Content types a job may declare: the audio and video containers Whisper's decoders read."""

from __future__ import annotations

SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/mpeg",
        "audio/mp3",
        "audio/mp4",
        "audio/x-m4a",
        "audio/m4a",
        "audio/aac",
        "audio/x-aac",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/amr",
        "audio/3gpp",
        "audio/x-aiff",
        "audio/aiff",
        "audio/x-ms-wma",
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "video/x-matroska",
        "video/ogg",
        "video/mpeg",
        "video/3gpp",
        "video/x-msvideo",
    }
)

_BY_EXTENSION = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/opus",
    ".webm": "audio/webm",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".aiff": "audio/aiff",
    ".amr": "audio/amr",
    ".wma": "audio/x-ms-wma",
}


def normalize(content_type: str) -> str:
    """`Audio/MPEG; charset=x` -> `audio/mpeg`."""
    return content_type.split(";", 1)[0].strip().lower()


def is_supported(content_type: str) -> bool:
    return normalize(content_type) in SUPPORTED_CONTENT_TYPES


def guess(filename: str) -> str | None:
    """The content type for a local file's extension, or None when the service would refuse it."""
    dot = filename.rfind(".")
    return _BY_EXTENSION.get(filename[dot:].lower()) if dot >= 0 else None
