"""Realistic demo data, generated deterministically and inserted in bulk.

:func:`generate` builds the rows (plain dicts, from a seeded ``random.Random``);
:func:`seed` and :func:`aseed` insert them with one executemany per table, so
10,000 messages take well under a second on SQLite.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from suture.demo.models import MessageStatus, RawMessage, SpamRule, Task, TaskStatus
from suture.demo.spam import Rule, RuleMode

__all__ = ["BRANDS", "SeedData", "aseed", "generate", "rule_from_row", "seed"]

BRANDS = ("northwind", "contoso", "fabrikam", "tailspin", "wingtip")

_SPAM_WORDS = (
    "free money",
    "click here",
    "limited offer",
    "crypto giveaway",
    "winner",
    "act now",
    "work from home",
    "miracle cure",
    "bitcoin doubler",
    "risk-free",
    "casino bonus",
    "urgent reply",
    "wire transfer",
    "lottery",
    "claim your prize",
    "no credit check",
    "cheap meds",
    "hot singles",
    "double your income",
    "guaranteed profit",
    "investment tip",
    "weight loss",
    "forex signal",
    "gift card",
    "unclaimed funds",
    "nigerian prince",
    "pre-approved",
    "exclusive deal",
    "100% free",
    "earn extra cash",
    "lowest price",
    "congratulations you won",
    "verify your account",
    "password expired",
    "cash bonus",
    "instant loan",
    "miracle pill",
    "get rich",
    "free trial",
    "special promotion",
)
_SPAM_SUFFIXES = ("", " now", " today", " online", " here", " fast", " inside", " offer")
_REGEX_RULES = (
    r"\bwin+er\b",
    r"\$\d{3,}",
    r"(?:free|cheap) (?:pills|meds|iphone)",
    r"bit.?coin",
    r"\bv[i1]agra\b",
    r"https?://\S+\.(?:ru|xyz|top)\b",
    r"(?:!){3,}",
    r"\bc[a4]sh\b.{0,10}fast",
    r"\b(?:100|1000)% (?:free|guaranteed)\b",
    r"\bcrypt[o0]\b",
)
_HAM = (
    "Hi, my order #{n} hasn't arrived yet, can you check?",
    "Can I change the delivery address for order {n}?",
    "The {item} I received is broken. What should I do?",
    "Thanks for the quick help with my {item} yesterday!",
    "Do you ship the {item} to {city}?",
    "I was charged twice for order {n}, please refund one.",
    "Is the {item} available in blue?",
    "How do I return the {item}? It does not fit.",
    "My account shows the wrong email, please update it.",
    "When will the {item} be back in stock?",
    "Could you send me the invoice for order {n}?",
    "The tracking number for order {n} does not work.",
)
_ITEMS = ("kettle", "backpack", "lamp", "headphones", "jacket", "blender", "chair", "monitor")
_CITIES = ("Lyon", "Porto", "Leeds", "Gdansk", "Malmo", "Graz", "Turin", "Ghent")
_TASK_TYPES = ("refund", "complaint", "shipping", "billing", "technical", "escalation")
_TASK_TITLES = (
    "Refund above the agent limit for order {n}",
    "Customer threatens chargeback on order {n}",
    "Replacement for damaged {item}",
    "Billing address mismatch on invoice {n}",
    "Warranty claim for {item}",
    "VIP customer asks for a discount",
    "Delivery lost in transit to {city}",
    "Duplicate charge on order {n}",
)
_NOTES = (
    "Amount is above my approval limit; please confirm.",
    "Customer asks to speak with a manager.",
    "Policy is unclear for this case, need a decision.",
    "Second complaint this week; should we compensate?",
    "Requires an exception to the return window.",
)
_AGENTS = ("amira", "bastien", "chloe", "dmitri", "elena", "farid", "greta", "hugo")


@dataclass(frozen=True, slots=True)
class SeedData:
    tasks: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    rules: list[dict[str, Any]]


def _rules(rng: random.Random, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    candidates: Iterator[tuple[str, RuleMode]] = (
        (word + suffix, mode)
        for suffix in _SPAM_SUFFIXES
        for word in _SPAM_WORDS
        for mode in (RuleMode.CONTAINS, RuleMode.WORD)
    )
    regexes = iter(_REGEX_RULES)
    extra = 0
    while len(out) < count:
        pick = rng.random()
        if pick < 0.05 and (pattern := next(regexes, None)) is not None:
            mode = RuleMode.REGEX
        elif pick < 0.08:
            mode = RuleMode.EXACT
            pattern = rng.choice(_SPAM_WORDS)
        else:
            item = next(candidates, None)
            if item is None:
                extra += 1
                item = (f"promo code sp{extra:04d}", RuleMode.CONTAINS)
            pattern, mode = item
        if (pattern, mode) in seen:
            continue
        seen.add((pattern, mode))
        brand = rng.choice(BRANDS) if rng.random() < 0.3 else None
        rule = Rule(len(out) + 1, pattern, mode, brand)
        out.append(
            {
                "pattern": pattern,
                "normalized_pattern": rule.normalized,
                "mode": mode,
                "brand": rule.brand,
                "enabled": rng.random() > 0.03,
            }
        )
    return out


def _message_text(rng: random.Random, spam: bool) -> str:
    text = rng.choice(_HAM).format(
        n=rng.randint(10_000, 99_999), item=rng.choice(_ITEMS), city=rng.choice(_CITIES)
    )
    if spam:
        phrase = rng.choice(_SPAM_WORDS) + rng.choice(_SPAM_SUFFIXES)
        if rng.random() < 0.5:
            text = f"{phrase.upper()}!!! {text}"
        else:
            text = f"{text} {phrase}, visit http://deals.example.xyz"
    return text


def generate(
    *,
    tasks: int = 300,
    messages: int = 10_000,
    rules: int = 200,
    spam_fraction: float = 0.15,
    seed: int = 7,
    now: datetime | None = None,
) -> SeedData:
    """Rows for the three tables (plain dicts for ``insert().values`` executemany)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    task_rows: list[dict[str, Any]] = []
    statuses = list(TaskStatus)
    weights = (35, 20, 25, 20)
    for _ in range(tasks):
        status = rng.choices(statuses, weights)[0]
        created = now - timedelta(minutes=rng.randint(5, 60 * 24 * 7))
        title = rng.choice(_TASK_TITLES).format(
            n=rng.randint(10_000, 99_999), item=rng.choice(_ITEMS), city=rng.choice(_CITIES)
        )
        needs = status is TaskStatus.ASSISTANCE_REQUIRED
        task_rows.append(
            {
                "title": title,
                "type": rng.choice(_TASK_TYPES),
                "status": status,
                "assignee": None if status is TaskStatus.OPEN else rng.choice(_AGENTS),
                "assistance_notes": rng.choice(_NOTES) if needs else None,
                "manager_response": None,
                "created_at": created,
                "updated_at": created,
                "assistance_requested_at": (
                    created + timedelta(minutes=rng.randint(1, 120)) if needs else None
                ),
                "responded_at": None,
            }
        )
    message_rows = [
        {
            "brand": rng.choice(BRANDS),
            "text": _message_text(rng, rng.random() < spam_fraction),
            "status": MessageStatus.READY,
            "matched_patterns": None,
            "created_at": now - timedelta(seconds=rng.randint(0, 86_400 * 3)),
        }
        for _ in range(messages)
    ]
    return SeedData(task_rows, message_rows, _rules(rng, rules))


def _statements(data: SeedData) -> list[tuple[sa.Insert, list[dict[str, Any]]]]:
    return [
        (sa.insert(Task), data.tasks),
        (sa.insert(RawMessage), data.messages),
        (sa.insert(SpamRule), data.rules),
    ]


def seed(conn: Connection, data: SeedData) -> None:
    """Insert ``data`` (one executemany per table); the caller commits."""
    for stmt, rows in _statements(data):
        if rows:
            conn.execute(stmt, rows)


async def aseed(conn: AsyncConnection, data: SeedData) -> None:
    """:func:`seed` for an ``AsyncConnection``."""
    for stmt, rows in _statements(data):
        if rows:
            await conn.execute(stmt, rows)


def rule_from_row(row: Any) -> Rule:
    """A matcher :class:`Rule` from a ``SpamRule`` row."""
    return Rule(row.id, row.pattern, RuleMode(row.mode), row.brand)
