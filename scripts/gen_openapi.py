"""Write the OpenAPI document generated from the API routes to docs/openapi.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> str:
    from lambdas.api.handler import openapi_json

    return json.dumps(json.loads(openapi_json()), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(DOC.parent.parent))
    DOC.write_text(render())
    print(f"wrote {DOC}")
