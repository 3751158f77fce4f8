"""The console in a real browser (Debian's headless Chromium, driven by Playwright)
against a real local cluster: a stuck transaction is listed with what it waits for, the
Resolve button on its page aborts it, and screenshots are written as test artifacts
(``$PAXOS_COMMIT_TEST_ARTIFACTS``, default ``test-artifacts/`` in the repository).

Skipped when Chromium or Playwright is missing here; ``.ci/run`` installs both and makes
a skip a failure."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paxos_commit.cluster import LocalCluster
from rm_sdk import Client, Participant, RMState, TransactionAborted
from rm_sdk._channels import Channels
from rm_sdk.protocol import Vote
from rm_sdk.wire import pb
from tests.integration.helpers import ScriptedRM, acceptor_states, wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PAXOS_COMMIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PAXOS_COMMIT_TEST_ARTIFACTS") or REPO / "test-artifacts")

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="pip install playwright (the dev extra has it)"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)", allow_module_level=True
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # Nothing recovers on its own during the test: whatever settles it is the console.
    c = LocalCluster(tmp_path / "cluster", vote_timeout=60.0, recovery_timeout=60.0, recovery_interval=0.5)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def console(cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port_file = tmp_path / "console.json"
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "paxos_commit", "console", "--listen", "127.0.0.1:0", "--refresh", "0",
            "--port-file", str(port_file),
            # The cluster and its admin certificate (mTLS, the default) from the data dir.
            "--attach", str(cluster.data_dir),
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, (tmp_path / "console.log").read_text()
            assert time.monotonic() < deadline, "console did not start"
            time.sleep(0.05)
        yield str(json.loads(port_file.read_text())["address"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_console_lists_a_stuck_transaction_and_resolves_it(cluster: LocalCluster, console: str) -> None:
    channels = Channels(cluster.credentials("admin", "local"))
    silent = Channels(cluster.credentials("rm", "silent"))
    coords = cluster.coordinator_addresses
    rm = ScriptedRM("fast")
    p = Participant(rm, coords, recovery_timeout=120.0, credentials=cluster.credentials("rm", "fast"))
    client = Client(coords, credentials=cluster.credentials("app", "shop"))
    txn = await client.begin()
    await p.join(txn.context)
    await silent.coordinator(txn.context.coordinator).Join(
        pb.JoinRequest(txn_id=txn.txn_id, rm_id="silent"), timeout=5
    )
    commit = asyncio.create_task(txn.commit())

    async def fast_voted() -> bool:
        states = [await acceptor_states(channels, a, txn.txn_id) for a in cluster.acceptor_addresses]
        return sum(1 for s in states if "fast" in s and s["fast"].val is Vote.PREPARED) >= 2

    await wait_until(fast_voted, what="fast's vote at a majority")

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(console)
            row = page.locator(f"#pending tr.txn[data-txn='{txn.txn_id}']")
            await row.wait_for(timeout=10_000)
            assert "in doubt" in await row.inner_text()
            assert "silent has not voted" in await row.inner_text()
            assert "SERVING" in await page.locator("#health").inner_text()
            await page.screenshot(path=str(ARTIFACTS / "console-overview-stuck.png"), full_page=True)

            # The filters: in doubt, for one resource manager; another RM lists nothing.
            await page.check("#filters input[name=in_doubt]")
            await page.fill("#filters input[name=rm]", "silent")
            await page.click("#filters button")
            await row.wait_for(timeout=10_000)
            await page.fill("#filters input[name=rm]", "nobody")
            await page.click("#filters button")
            await page.wait_for_url("**rm=nobody**")
            assert await page.locator(f"#pending tr.txn[data-txn='{txn.txn_id}']").count() == 0
            await page.goto(console)

            await row.locator("a").click()
            await page.wait_for_selector("#resolve")
            assert "PENDING (in doubt)" in await page.locator("#f-outcome").inner_text()
            assert "silent" in await page.locator("#instances").inner_text()
            await page.screenshot(path=str(ARTIFACTS / "console-txn-stuck.png"), full_page=True)
            await page.click("#resolve")
            await page.wait_for_selector("#flash", timeout=30_000)
            assert "ABORTED" in await page.locator("#flash").inner_text()
            assert (await page.locator("#f-outcome").inner_text()).startswith("ABORTED")
            await page.screenshot(path=str(ARTIFACTS / "console-txn-resolved.png"), full_page=True)

            await page.goto(console)
            assert await page.locator(f"#pending tr.txn[data-txn='{txn.txn_id}']").count() == 0
            await page.screenshot(path=str(ARTIFACTS / "console-overview-after.png"), full_page=True)
        finally:
            await browser.close()

    with pytest.raises(TransactionAborted):
        await commit
    assert await p.wait(txn.txn_id) is RMState.ABORTED
    assert rm.aborted == [txn.txn_id] and rm.committed == []
    assert _written(ARTIFACTS / "console-txn-resolved.png")
    await client.close()
    await p.close()
    await channels.close()
    await silent.close()


def _written(path: Path) -> bool:
    return path.stat().st_size > 0
