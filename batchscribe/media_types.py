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


# A container's signature in its first bytes: (offset, bytes, content type). Checked in order.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"fLaC", "audio/flac"),
    (8, b"WAVE", "audio/wav"),  # RIFF....WAVE
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (8, b"AIFF", "audio/aiff"),  # FORM....AIFF
    (0, b"#!AMR", "audio/amr"),
    (4, b"ftypM4A", "audio/mp4"),
    (4, b"ftypqt", "video/quicktime"),
    (4, b"ftyp3g", "video/3gpp"),
    (4, b"ftyp", "video/mp4"),
    (0, b"\x1a\x45\xdf\xa3", "video/x-matroska"),  # EBML: Matroska or WebM
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "audio/x-ms-wma"),  # ASF
)
SNIFF_BYTES = 16  # enough for every signature above


def sniff(head: bytes) -> str | None:
    """The content type a file's first bytes (`SNIFF_BYTES` of them) show, or None: for a file
    whose name says nothing (no extension, or another one)."""
    for offset, magic, content_type in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame's sync word
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"  # layer bits 00: ADTS (AAC)
    return None
