"""The console's HTML, rendered on the server (no script, no build step)."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from paxos_commit.admin import Health, TxnView, show_ballot, show_value
from rm_sdk.protocol import Outcome

__all__ = ["index_page", "message_page", "txn_page"]

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd;
  text-align: left; vertical-align: top; } th { background: #f4f4f4; }
code, .mono { font-family: ui-monospace, monospace; font-size: 13px; }
.SERVING, .committed { color: #176e2e; } .UNREACHABLE, .NOT_SERVING, .aborted { color: #b3261e; }
.in-doubt { color: #9a5b00; font-weight: 600; } .muted { color: #777; }
.flash { background: #eef5ff; border: 1px solid #a8c6f0; padding: .5em .8em; margin: .8em 0; }
form { display: inline; } button { padding: 4px 10px; }
"""


def _page(title: str, body: str, refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>{meta}<style>{_CSS}</style></head>"
        f"<body><p class='muted'><a href='/'>paxos-commit console</a></p>{body}</body></html>"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _txn_link(txn_id: str) -> str:
    return f"<a class='mono' href='/txn/{quote(txn_id)}'>{escape(txn_id)}</a>"


def _outcome_cell(v: TxnView) -> str:
    if v.in_doubt:
        return "<span class='in-doubt'>in doubt</span>"
    o = v.outcome
    return f"<span class='{o.value}'>{escape(o.value)}</span>"


def _health_table(health: list[Health]) -> str:
    rows = "".join(
        f"<tr><td>{escape(h.name)}</td><td class='mono'>{escape(h.address)}</td>"
        f"<td class='{escape(h.status)}'>{escape(h.status)}</td><td class='muted'>{escape(h.detail)}</td></tr>"
        for h in health
    )
    return (
        f"<table id='health'><tr><th>service</th><th>address</th><th>health</th><th></th></tr>{rows}</table>"
    )


def _filter_form(query: dict[str, str]) -> str:
    checked = " checked" if query.get("in_doubt") else ""
    return (
        "<form method='get' action='/' id='filters'>"
        f"<label><input type='checkbox' name='in_doubt' value='1'{checked}> in doubt only</label> "
        f"<label>older than <input name='older_than' size='5' placeholder='30s' value='{escape(query.get('older_than', ''))}'></label> "
        f"<label>resource manager <input name='rm' size='12' value='{escape(query.get('rm', ''))}'></label> "
        "<button type='submit'>filter</button></form>"
    )


def index_page(
    health: list[Health],
    pending: list[TxnView],
    recent: list[dict[str, Any]],
    refresh: int,
    flash: str = "",
    query: dict[str, str] | None = None,
) -> str:
    parts = ["<h1>paxos-commit</h1>"]
    if flash:
        parts.append(f"<div class='flash' id='flash'>{escape(flash)}</div>")
    parts.append("<h2>Acceptors and coordinators</h2>")
    parts.append(_health_table(health))
    parts.append(f"<h2>In flight and in doubt ({len(pending)})</h2>")
    parts.append(_filter_form(query or {}))
    if pending:
        rows = "".join(
            f"<tr class='txn' data-txn='{escape(v.txn_id)}'><td>{_txn_link(v.txn_id)}</td>"
            f"<td>{_age(v.age_s)}</td><td>{_outcome_cell(v)}</td>"
            f"<td>{escape(', '.join(i for i in v.instances() if not i.startswith('@')) or '-')}</td>"
            f"<td>{'<br>'.join(escape(w) for w in v.waits_for())}</td></tr>"
            for v in pending
        )
        parts.append(
            "<table id='pending'><tr><th>transaction</th><th>age</th><th>state</th>"
            f"<th>participants</th><th>waits for</th></tr>{rows}</table>"
        )
    else:
        parts.append("<p class='muted' id='pending'>none</p>")
    parts.append(f"<h2>Recent outcomes ({len(recent)})</h2>")
    if recent:
        rows = "".join(
            f"<tr><td>{_txn_link(d['txn_id'])}</td><td class='{escape(d['outcome'])}'>{escape(d['outcome'])}</td>"
            f"<td>{escape(d['cause'])}</td><td>{escape(d['reason'])}</td><td>{_age(d['age_s'])} ago</td>"
            f"<td class='muted'>{escape(d['decided_by'])}</td></tr>"
            for d in recent
        )
        parts.append(
            "<table id='recent'><tr><th>transaction</th><th>outcome</th><th>cause</th><th>reason</th>"
            f"<th>decided</th><th>by</th></tr>{rows}</table>"
        )
    else:
        parts.append("<p class='muted' id='recent'>none yet</p>")
    return _page("paxos-commit console", "".join(parts), refresh)


def txn_page(v: TxnView, token: str, flash: str = "") -> str:
    parts = [f"<h1>Transaction <span class='mono'>{escape(v.txn_id)}</span></h1>"]
    if flash:
        parts.append(f"<div class='flash' id='flash'>{escape(flash)}</div>")
    if v.owned is not None:
        owner = f"{v.owned.leader_id} at {v.owned.coordinator} ({v.owned.phase})"
    elif v.decided_by:
        owner = f"finished; decided by {v.decided_by}"
    else:
        owner = "no coordinator drives it (finished, or its owner died or restarted)"
    o = v.outcome
    outcome = "PENDING (in doubt)" if v.in_doubt else str(o.value).upper()
    if o is Outcome.ABORTED and (v.cause() or v.reason()):
        outcome += f" ({', '.join(x for x in (v.cause(), v.reason()) if x)})"
    if v.operator_ballots() and v.cause() != "operator":
        outcome += f"; an operator's ballot ({', '.join(v.operator_ballots())}) took part"
    facts = [
        ("owner", owner),
        ("age", _age(v.age_s)),
        ("registrar", v.registrar()),
        ("outcome", outcome),
        (
            "recorded",
            ", ".join(
                f"acceptor {i}: {v.recorded[i].value if i in v.recorded else 'unreachable' if i in v.unreachable else 'never heard of it'}"
                for i in range(v.n_acceptors)
            ),
        ),
        ("waits for", "; ".join(v.waits_for()) or "-"),
        ("collection", v.collection_state()),
    ]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td id='f-{k.replace(' ', '-')}'>{escape(x)}</td></tr>" for k, x in facts
    )
    parts.append(f"<table id='facts'>{rows}</table>")
    if o is Outcome.PENDING:
        parts.append(
            "<h2>Settle</h2><p>Resolve runs a higher ballot as an admin leader: every instance "
            "nobody accepted a value in gets <em>aborted</em> (the registrar \u201cno set\u201d); a "
            "commit that may have been chosen is kept. It can never break atomicity.</p>"
            f"<form method='post' action='/txn/{quote(v.txn_id)}/resolve'>"
            f"<input type='hidden' name='token' value='{escape(token)}'>"
            "<button id='resolve' type='submit'>Resolve (abort)</button></form> "
            f"<form method='post' action='/txn/{quote(v.txn_id)}/retry'>"
            f"<input type='hidden' name='token' value='{escape(token)}'>"
            "<button id='retry' type='submit'>Retry recovery now</button></form>"
        )
    ins = v.instances()
    if ins:
        cells = []
        for name in ins:
            for i in range(v.n_acceptors):
                st_all = v.states.get(i)
                if st_all is None:
                    cells.append(
                        f"<tr><td class='mono'>{escape(name)}</td><td>{i}</td><td colspan=3>unreachable</td></tr>"
                    )
                    continue
                st = st_all.get(name)
                if st is None:
                    cells.append(
                        f"<tr><td class='mono'>{escape(name)}</td><td>{i}</td><td>-</td><td>-</td><td>-</td></tr>"
                    )
                else:
                    cells.append(
                        f"<tr><td class='mono'>{escape(name)}</td><td>{i}</td>"
                        f"<td class='mono'>{escape(show_ballot(st.mbal))}</td><td class='mono'>{escape(show_ballot(st.bal))}</td>"
                        f"<td>{escape(show_value(st.val))}</td></tr>"
                    )
        parts.append(
            "<h2>Instances at each acceptor</h2><table id='instances'><tr><th>instance</th>"
            f"<th>acceptor</th><th>mbal</th><th>bal</th><th>val</th></tr>{''.join(cells)}</table>"
        )
    parts.append(f"<p class='muted'><a href='/api/txn/{quote(v.txn_id)}'>JSON</a></p>")
    return _page(f"transaction {v.txn_id}", "".join(parts))


def message_page(status: int, text: str) -> str:
    return _page(f"{status}", f"<h1>{status}</h1><p id='message'>{escape(text)}</p>")
