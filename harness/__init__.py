"""The development harness: what tests, benchmarks and the chaos run share, shipped in no
wheel (`[tool.setuptools.packages.find]` leaves it out) and imported by no product package
(an import-linter contract).

- `audio`: test speech made with espeak-ng (and ffmpeg for other containers and poison files);
- `faults`: AWS calls that fail, stall or are reported failed, in this process and in workers;
- `chaos`: the chaos run (`python -m harness.chaos`, `make chaos`);
- `jobs`: a job taken to `succeeded` through the repository, as the intake and a worker would.

Run from the repository root (or with it on PYTHONPATH): `python -m harness.chaos --help`.
"""
