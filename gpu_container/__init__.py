"""The worker image: the Whisper worker program and its engines (see Dockerfile)."""
