"""The Batchscribe worker: pulls jobs from SQS, transcribes with Whisper, writes results."""
