"""The app layer: the `batchscribe` CLI, the HTTP client, the local stack and the samples.

It may import every other package (the core, the Lambda handlers, the worker); nothing in
those imports it, and neither the Lambda assets nor the worker image carry it."""
