"""The worker's one logger (JSON lines through Powertools), in a module of its own so that the
parts that run without AWS (the batches, the GPU benchmark's host) can log without importing the
queue and repository code."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="batchscribe-worker")
