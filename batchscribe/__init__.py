"""Batchscribe: self-hosted asynchronous Whisper transcription on AWS."""

__version__ = "0.1.0"
