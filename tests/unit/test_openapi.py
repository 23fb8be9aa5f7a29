"""docs/openapi.json is what `meterflow serve` serves at /openapi.json."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from meterflow.api.openapi import COMMITTED, spec, text


def test_the_committed_description_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == text(), (
        "docs/openapi.json is stale: run `.venv/bin/python -m meterflow.api.openapi`"
    )


def test_it_is_openapi_3_and_served_at_openapi_json() -> None:
    from meterflow.api.app import ApiConfig, create_app
    from meterflow.catalog import load_catalog

    cat = load_catalog()
    app = create_app(ApiConfig(cat.subscriptions, cat.book, cat.meters), None, None)  # type: ignore[arg-type]
    served = TestClient(app).get("/openapi.json").json()
    assert served == spec() == json.loads(COMMITTED.read_text())
    assert served["openapi"].startswith("3.")
    # every /v1 operation is behind a bearer key; the ingest body is described
    ops = [
        op for p, item in served["paths"].items() if p.startswith("/v1/") for op in item.values()
    ]
    assert ops and all(op["security"] == [{"bearer": []}] for op in ops)
    body = served["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/EventBatch"
    assert "EventIn" in served["components"]["schemas"]
