"""The transparency report: what the server holds and what was asked of its operators,
as a document to publish (Markdown or JSON). Counts only: no account ids, no names."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from .storage import admin, audit
from .storage.schema import audit_log

#: Audit events that are operators' actions or requests about accounts, counted by name.
OPERATOR_EVENTS = ("account_suspended", "account_unsuspended", "invites_created",
                   "operator_added", "operator_revoked", "retention_applied",
                   "backup_taken", "server_restored", "username_released",
                   "trust_root_replaced")
#: Events of users exercising their rights over their data (if the relay records them).
DATA_EVENTS = ("account_exported", "history_cleared", "account_deleted")


def build(conn: Connection, *, since: int, now: int) -> dict[str, Any]:
    """The report's content: holdings now, events in ``[since, now]`` (ms)."""
    held = admin.holdings(conn)
    invites = admin.invite_counts(conn, now)
    events: Counter[str] = Counter()
    by_operators: Counter[str] = Counter()
    by_operator = audit_log.c.actor.is_not(None).label("by_operator")
    for event, operator, count in conn.execute(
            select(audit_log.c.event, by_operator, func.count()).where(
                audit_log.c.at >= since, audit_log.c.at <= now).group_by(
                audit_log.c.event, by_operator)):
        events[event] += int(count)
        if operator:
            by_operators[event] += int(count)
    head_seq, head_hash = audit.head(conn)
    verdict = audit.verify(conn)
    return {
        "generated_at": _iso(now),
        "period": {"from": _iso(since), "to": _iso(now)},
        "holdings": asdict(held),
        "invites": asdict(invites),
        "operator_actions": {e: by_operators[e] for e in sorted(by_operators)},
        "account_suspensions": events["account_suspended"],
        "data_requests": {e: events[e] for e in DATA_EVENTS if events[e]},
        "account_events": {e: n for e, n in sorted(events.items())
                           if e not in by_operators or n > by_operators[e]},
        "audit_log": {"entries": head_seq, "head": head_hash.hex(),
                      "verified": verdict.ok},
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown document."""
    h = report["holdings"]
    lines = [
        "# Transparency report",
        "",
        f"Period: {report['period']['from']} to {report['period']['to']}  ",
        f"Generated: {report['generated_at']}",
        "",
        "Messages are end-to-end encrypted: the server holds ciphertext it cannot read, "
        "public keys, and the counts below. This report is made from the server's "
        "database and its tamper-evident audit log.",
        "",
        "## What the server holds",
        "",
        "| | count | bytes |",
        "|---|---:|---:|",
        f"| accounts | {h['accounts']} | |",
        f"| suspended accounts | {h['suspended_accounts']} | |",
        f"| devices | {h['devices']} | |",
        f"| queued (undelivered) messages | {h['queued_messages']} | {h['queued_bytes']} |",
        f"| stored history entries (encrypted) | {h['history_entries']} "
        f"| {h['history_bytes']} |",
        f"| attachments (encrypted) | {h['attachments']} | {h['attachment_bytes']} |",
        f"| one-time prekeys (public) | {h['one_time_prekeys']} | |",
        "",
        "## What was requested and done",
        "",
        f"Accounts suspended in the period: {report['account_suspensions']}",
        "",
    ]
    actions = report["operator_actions"]
    if actions:
        lines += ["| operator action | count |", "|---|---:|"]
        lines += [f"| {event} | {n} |" for event, n in actions.items()]
    else:
        lines.append("No operator actions in the period.")
    lines.append("")
    data = report["data_requests"]
    if data:
        lines += ["| users' data requests | count |", "|---|---:|"]
        lines += [f"| {event} | {n} |" for event, n in data.items()]
    else:
        lines.append("No data export or deletion requests recorded in the period.")
    invites = report["invites"]
    lines += [
        "",
        f"Invite codes: {invites['unused']} unused, {invites['used']} used, "
        f"{invites['expired']} expired.",
        "",
        "## Audit log",
        "",
        f"{report['audit_log']['entries']} entries; chain head "
        f"`{report['audit_log']['head']}`; verified: "
        f"{'yes' if report['audit_log']['verified'] else 'NO (see `audit verify`)'}.",
        "Keep this head: a later report's log must extend it (`cipherpost-admin audit "
        "verify --head HASH`).",
        "",
    ]
    return "\n".join(lines)
