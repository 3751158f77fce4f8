"""``paxos-commit console``: a small web console over :class:`paxos_commit.admin.Admin`.

Pages (server-rendered HTML, no script): ``/`` (health, transactions in flight and in
doubt with their age and what they wait for, recent outcomes with causes) and
``/txn/ID`` (what ``txn show`` prints, with Resolve and Retry buttons). The same data as
JSON: ``/api/overview``, ``/api/transactions?in_doubt=1&older_than=30s&rm=X&outcome=Y``,
``/api/txn/ID``, and ``POST /api/txn/ID/resolve`` / ``POST /api/txn/ID/retry``. Also
``/metrics`` (operator actions) and ``/healthz``.

The HTTP side is the standard library's threading server; the gRPC side runs on one
asyncio loop in a thread of its own. Forms carry a per-process token and the JSON
actions need ``Content-Type: application/json``, so another site cannot make a
browser press the buttons. The console has no login: bind it to loopback (the default)
or put it behind the cluster's authentication. To the cluster it is an admin: with TLS
it presents its ``admin/<name>`` certificate (``tls``; the chart issues one), and the
cluster's services authorize it by :mod:`paxos_commit.authz`; whoever reaches the console
acts with that certificate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import Coroutine
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paxos_commit.admin import REGISTRY, Admin, Filters, TxnNotFound, parse_duration
from paxos_commit.console import render
from rm_sdk.protocol import Outcome, ProtocolError

if TYPE_CHECKING:
    from paxos_commit.certs import TlsFiles

__all__ = ["Console"]

log = logging.getLogger("paxos_commit.console")

T = TypeVar("T")


class Console:
    """The console's state: its cluster, its event loop thread, its HTTP server."""

    def __init__(
        self,
        acceptors: list[str],
        coordinators: list[str],
        listen: tuple[str, int] = ("127.0.0.1", 8080),
        *,
        refresh: int = 5,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: the console's admin certificate files (None: a cluster without TLS)."""
        self.acceptors = acceptors
        self.tls = tls
        self.coordinators = coordinators
        self.refresh = refresh
        self.token = secrets.token_urlsafe(16)
        self._serving = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="console-grpc", daemon=True)
        self._thread.start()
        self.admin: Admin = self.call(self._make_admin())
        console = self

        class Handler(_Handler):
            app = console

        self.httpd = ThreadingHTTPServer(listen, Handler)
        self.httpd.daemon_threads = True

    async def _make_admin(self) -> Admin:
        return Admin(self.acceptors, self.coordinators, tls=self.tls)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve_forever(self) -> None:
        self._serving = True
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve in a background thread (tests)."""
        self._serving = True
        threading.Thread(target=self.serve_forever, name="console-http", daemon=True).start()

    def close(self) -> None:
        if self._serving:  # shutdown() waits for a serve_forever() that must have started
            self.httpd.shutdown()
        self.httpd.server_close()
        self.call(self.admin.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    # ---------------------------------------------------------------- data

    async def overview(self, filters: Filters | None = None) -> dict[str, Any]:
        health, pending, recent = await asyncio.gather(
            self.admin.health(),
            self.admin.list_transactions(filters or Filters(outcome=Outcome.PENDING, limit=200)),
            self.admin.recent(50),
        )
        return {"health": health, "pending": pending, "recent": recent}


class _Handler(BaseHTTPRequestHandler):
    app: Console
    server_version = "paxos-commit-console"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: str | bytes, ctype: str = "text/html; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc, indent=1, sort_keys=True), "application/json")

    def _error(self, api: bool, status: int, text: str) -> None:
        if api:
            self._json(status, {"error": text})
        else:
            self._send(status, render.message_page(status, text))

    def _redirect(self, where: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(n, 64 * 1024)) if n > 0 else b""

    # ---------------------------------------------------------------- routes

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = bool(parts) and parts[0] == "api"
        try:
            if not parts:
                shown = Filters(
                    in_doubt=query.get("in_doubt", "") in ("1", "on", "true"),
                    older_than=parse_duration(query["older_than"]) if query.get("older_than") else 0.0,
                    rm_id=query.get("rm", ""),
                    outcome=Outcome.PENDING,
                    limit=200,
                )
                o = self.app.call(self.app.overview(shown))
                self._send(
                    200,
                    render.index_page(
                        o["health"], o["pending"], o["recent"], self.app.refresh, query.get("done", ""), query
                    ),
                )
            elif parts == ["healthz"]:
                self._send(200, "ok\n", "text/plain")
            elif parts == ["metrics"]:
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif len(parts) == 2 and parts[0] == "txn":
                v = self.app.call(self.app.admin.show(parts[1]))
                self._send(200, render.txn_page(v, self.app.token, query.get("done", "")))
            elif parts == ["api", "overview"]:
                o = self.app.call(self.app.overview())
                self._json(
                    200,
                    {
                        "health": [dataclasses.asdict(h) for h in o["health"]],
                        "pending": [v.to_json() for v in o["pending"]],
                        "recent": o["recent"],
                    },
                )
            elif parts == ["api", "transactions"]:
                f = Filters(
                    in_doubt=query.get("in_doubt", "") in ("1", "true", "yes"),
                    older_than=parse_duration(query["older_than"]) if query.get("older_than") else 0.0,
                    rm_id=query.get("rm", ""),
                    outcome=_outcome(query["outcome"]) if query.get("outcome") else None,
                    limit=_limit(query.get("limit", "200")),
                )
                views = self.app.call(self.app.admin.list_transactions(f))
                self._json(200, [v.to_json() for v in views])
            elif len(parts) == 3 and parts[:2] == ["api", "txn"]:
                self._json(200, self.app.call(self.app.admin.show(parts[2])).to_json())
            else:
                self._error(api, 404, f"no page {url.path}")
        except TxnNotFound as exc:
            self._error(api, 404, str(exc))
        except (ProtocolError, ValueError) as exc:
            self._error(api, 400, str(exc))
        except Exception as exc:
            log.exception("console: GET %s failed", url.path)
            self._error(api, 502, f"{type(exc).__name__}: {exc}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        api = bool(parts) and parts[0] == "api"
        if api:
            parts = parts[1:]
        if len(parts) != 3 or parts[0] != "txn" or parts[2] not in ("resolve", "retry"):
            self._error(api, 404, f"no action {url.path}")
            return
        txn_id, action = parts[1], parts[2]
        body = self._body()
        if api:
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                self._error(api, 415, "actions take Content-Type: application/json")
                return
        else:
            form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
            if not secrets.compare_digest(form.get("token", ""), self.app.token):
                self._error(api, 403, "missing or stale form token: reload the page")
                return
        try:
            if action == "resolve":
                r = self.app.call(self.app.admin.resolve_abort(txn_id))
                text = f"{str(r.outcome.value).upper()}: {r.detail}"
                doc: Any = {
                    "txn_id": txn_id,
                    "outcome": r.outcome.value,
                    "changed": r.changed,
                    "detail": r.detail,
                }
            else:
                done = self.app.call(self.app.admin.retry(txn_id))
                text = "; ".join(f"{c}: {a}" for c, a in done) or "no coordinator configured"
                doc = [{"coordinator": c, "action": a} for c, a in done]
            log.warning("console: %s %s: %s", action, txn_id, text)
        except TxnNotFound as exc:
            self._error(api, 404, str(exc))
            return
        except (ProtocolError, ValueError) as exc:
            self._error(api, 400, str(exc))
            return
        except Exception as exc:
            log.exception("console: %s %s failed", action, txn_id)
            self._error(api, 502, f"{type(exc).__name__}: {exc}")
            return
        if api:
            self._json(200, doc)
        else:
            self._redirect(f"/txn/{quote(txn_id)}?done={quote(text)}")


def _limit(value: str) -> int:
    """The ``limit`` query parameter: a whole number >= 1 (capped at 10,000)."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"limit: {value!r} is not a whole number") from None
    if n < 1:
        raise ValueError(f"limit: {n}; give a whole number >= 1")
    return min(n, 10_000)


def _outcome(value: str) -> Outcome:
    """The ``outcome`` query parameter, one of the outcomes' names."""
    try:
        return Outcome(value)
    except ValueError:
        names = ", ".join(o.value for o in Outcome)
        raise ValueError(f"outcome: {value!r}; one of {names}") from None
