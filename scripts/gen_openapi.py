"""Write the OpenAPI document generated from the API routes to docs/openapi.json.

python -m scripts.gen_openapi   (make openapi)
"""

from __future__ import annotations

import json
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> str:
    from lambdas.api.handler import openapi_json

    return json.dumps(json.loads(openapi_json()), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
