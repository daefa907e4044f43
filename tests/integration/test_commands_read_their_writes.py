"""Commands read their own writes too (issue 10, item 8): in the split deployment, approving
a direct call's approval right after the call asked for it finds it (it was 404 in 9 of 20
tries), and the approval's answer carries the call's receipt."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.processes import cluster

CALL = {"tool": "http.fetch", "arguments": {"url": "http://127.0.0.1:9/"}}


def test_a_direct_calls_approval_answered_at_once_is_found_and_returns_the_receipt(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        api = nodes.start("api", "api")
        nodes.start("projector", "projector", "worker")
        nodes.wait_for_key(api)
        with httpx.Client(base_url=api.url, headers=nodes.headers(), timeout=30) as client:
            for attempt in range(20):
                asked = client.post("/v1/tools/call", json=CALL)
                assert asked.status_code == 202, asked.text
                approval_id = asked.json()["approval_id"]
                # Half with the position the call reached, half without: both must work.
                headers = (
                    {"X-Nome-Min-Position": asked.headers["x-nome-position"]} if attempt % 2 else {}
                )
                approved = client.post(f"/v1/approvals/{approval_id}/approve", headers=headers)

                assert approved.status_code == 200, (attempt, approved.text)
                body = approved.json()
                assert body["status"] == "approved"
                receipt = body["receipt"]
                assert receipt["approval_id"] == approval_id
                assert receipt["call_id"] == asked.json()["call_id"]
                # 127.0.0.1 is not a public address: the call ran and was refused by the tool.
                assert receipt["status"] == "error"
