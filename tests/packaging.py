"""What a build of the repository packages: the product's top-level packages (pyproject.toml's
[tool.setuptools.packages.find]), for the tests that build a wheel from a copy of them."""

PRODUCT = ("batchscribe", "batchscribe_cli", "gpu_container", "lambdas", "stacks")
