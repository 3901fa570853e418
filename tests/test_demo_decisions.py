"""A reviewer's decision survives later captures (issue 15), on SQLite and PostgreSQL.

A release says "these patterns are wrong about this message": the same rules
never capture it again; a rule that did not catch it before still can. An
archive and a promote are terminal: no capture moves such a message.
Everything runs with the seeded (real) rules through the HTTP API.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from suture.demo.app import Settings, create_app
from suture.demo.models import RawMessage, RuleMode, SpamRule
from suture.testing import FakeClock

SMALL = {"tasks": 10, "messages": 300, "rules": 60}


def signed_in(app: Any, **kwargs: Any) -> TestClient:
    """A client of the demo ``app``; with the manager's bearer token once the demo has one
    (a demo that signs managers in answers others 401), on a loopback Host."""
    token = getattr(app.state.service, "console_token", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, headers=headers, base_url="http://localhost", **kwargs)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[TestClient]:
    database: dict[str, Any]
    if request.param == "sqlite":
        database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"}
    else:
        database = {
            "database_url": request.getfixturevalue("pg_url"),
            "schema": request.getfixturevalue("unique_name"),
        }
    settings = Settings(
        **SMALL,
        **database,
        background=False,
        clock=FakeClock(),
        rand=random.Random(5),
    )
    try:
        with signed_in(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        if "schema" in database:
            engine = sa.create_engine(database["database_url"])
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{database["schema"]}" CASCADE'))
            engine.dispose()


def run(client: TestClient, stmt: Any) -> Any:
    """Run one statement on the app's engine in its own transaction (from the test thread)."""
    engine = client.app.state.service.engine  # type: ignore[attr-defined]

    async def go() -> Any:
        async with engine.begin() as conn:
            return await conn.execute(stmt)

    assert client.portal is not None
    return client.portal.call(go)


def capture(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/manager/spam/capture")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def review_queue(client: TestClient) -> dict[int, dict[str, Any]]:
    r = client.get("/api/manager/spam", params={"limit": 500})
    return {m["id"]: m for m in r.json()["messages"]}


def test_a_released_message_is_not_captured_again_by_the_same_rules(client: TestClient) -> None:
    first = capture(client)
    assert first["updatedCount"] > 3
    queue = review_queue(client)
    released = sorted(queue)[:3]
    for message_id in released:
        r = client.post(f"/api/manager/spam/{message_id}/release")
        assert r.status_code == 200, r.text
        message = r.json()["message"]
        assert message["status"] == "READY"
        assert message["matchedPatterns"] == []
        # the decision is kept: the patterns it was released from
        assert message["releasedPatterns"] == queue[message_id]["matchedPatterns"]
    again = capture(client)
    assert again["updatedCount"] == 0  # was 3: the reviewer's decisions were lost
    assert not set(released) & set(review_queue(client))
    ready = client.get("/api/messages", params={"status": "READY", "limit": 500}).json()
    assert set(released) <= {m["id"] for m in ready["messages"]}


def test_a_new_rule_can_still_catch_a_released_message(client: TestClient) -> None:
    capture(client)
    message_id = min(review_queue(client))
    old = client.post(f"/api/manager/spam/{message_id}/release").json()["message"]
    text = run(client, sa.select(RawMessage.text).where(RawMessage.id == message_id)).scalar_one()
    # a rule that matches it (its whole text, exactly) and that did not catch it before
    run(
        client,
        sa.insert(SpamRule).values(
            pattern=text,
            normalized_pattern=" ".join(text.lower().split()),
            mode=RuleMode.EXACT,
            brand=None,
            enabled=True,
        ),
    )
    assert capture(client)["updatedCount"] == 1
    caught = review_queue(client)[message_id]
    # it lists only the new pattern: the old ones were judged already
    assert caught["matchedPatterns"] == [" ".join(text.lower().split())]
    assert caught["releasedPatterns"] == old["releasedPatterns"]
    # released again: both decisions are kept, and neither rule set catches it again
    again = client.post(f"/api/manager/spam/{message_id}/release").json()["message"]
    assert again["releasedPatterns"] == [*old["releasedPatterns"], caught["matchedPatterns"][0]]
    assert capture(client)["updatedCount"] == 0


def test_archived_and_promoted_messages_are_never_captured(client: TestClient) -> None:
    capture(client)
    archived = min(review_queue(client))
    assert client.post(f"/api/manager/spam/{archived}/archive").status_code == 200
    # promote a READY message that the rules match: release one, then promote it
    promoted = max(review_queue(client))
    client.post(f"/api/manager/spam/{promoted}/release")
    assert client.post(f"/api/messages/{promoted}/promote").status_code == 200
    # even with every released pattern forgotten, neither is READY: capture skips them
    run(client, sa.update(RawMessage).values(released_patterns=None))
    capture(client)
    statuses = dict(
        run(
            client,
            sa.select(RawMessage.id, RawMessage.status).where(
                RawMessage.id.in_([archived, promoted])
            ),
        ).all()
    )
    assert {k: v.value for k, v in statuses.items()} == {
        archived: "SPAM_ARCHIVED",
        promoted: "PROMOTED",
    }


def test_releasing_twice_keeps_the_decision_once(client: TestClient) -> None:
    capture(client)
    message_id = min(review_queue(client))
    first = client.post(f"/api/manager/spam/{message_id}/release").json()["message"]
    second = client.post(f"/api/manager/spam/{message_id}/release")  # a retried click
    assert second.status_code == 200
    assert second.json()["message"]["releasedPatterns"] == first["releasedPatterns"]


def test_a_database_made_before_the_decision_column_gets_it(tmp_path: Any) -> None:
    """An older suture-demo.db (no released_patterns) is upgraded at start, not a 500."""
    import sqlite3

    path = tmp_path / "old.db"
    settings = Settings(
        **SMALL,
        database_url=f"sqlite+aiosqlite:///{path}",
        background=False,
        clock=FakeClock(),
        rand=random.Random(5),
    )
    with signed_in(create_app(settings)):
        pass
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE demo_raw_message DROP COLUMN released_patterns")
    with signed_in(create_app(settings), raise_server_exceptions=False) as c:
        assert capture(c)["updatedCount"] > 0
        message_id = min(review_queue(c))
        assert c.post(f"/api/manager/spam/{message_id}/release").status_code == 200
        assert capture(c)["updatedCount"] == 0
