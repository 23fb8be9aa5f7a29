"""The API's OpenAPI description, as committed in docs/openapi.json.

Regenerate after changing a route or a model: `.venv/bin/python -m meterflow.api.openapi`
(tests/unit/test_openapi.py fails until the committed file equals what the app serves).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from meterflow.settings import REPO_ROOT

COMMITTED = REPO_ROOT / "docs" / "openapi.json"


def spec() -> dict[str, Any]:
    from meterflow.api.app import ApiConfig, create_app
    from meterflow.catalog import load_catalog

    # the description depends on no definition file and no service: none is reached
    cat = load_catalog()
    app = create_app(ApiConfig(cat.subscriptions, cat.book, cat.meters), None, None)  # type: ignore[arg-type]
    return app.openapi()


def text() -> str:
    return json.dumps(spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    COMMITTED.write_text(text())
    print(f"wrote {COMMITTED.relative_to(REPO_ROOT)}", file=sys.stderr)
