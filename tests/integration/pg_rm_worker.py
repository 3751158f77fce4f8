"""A Postgres RM in its own process, for crash tests (run as a script; the test kills it).

``work DSN RM_ID COORDS ACCEPTORS TOKEN``: join the transaction, add 10 to alice in its
own work connection, print ``worked``, then serve the transaction until killed.
``recover DSN RM_ID COORDS ACCEPTORS``: resume the in-doubt transactions, wait until each
is finished, print ``<txn_id> <state>`` lines and exit.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from rm_sdk.client import TransactionContext
from rm_sdk.postgres import PostgresRM


async def main(argv: list[str]) -> None:
    mode, dsn, rm_id, coords, acceptors = argv[:5]
    rm = PostgresRM(dsn, rm_id, coords.split(","), acceptors=acceptors.split(","), recovery_timeout=2.0)
    if mode == "work":
        ctx = TransactionContext.parse(argv[5])
        async with rm.work(ctx) as conn:
            await conn.execute("UPDATE accounts SET balance = balance + 10 WHERE name = 'alice'")
        print("worked", flush=True)
        await asyncio.Event().wait()
    else:
        for txn_id in await rm.recover():
            state = await asyncio.wait_for(rm.participant.wait(txn_id), 30)
            print(txn_id, state.value, flush=True)
        await rm.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[1:]))
