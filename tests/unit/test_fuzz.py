"""A bounded property-based fuzz (hypothesis) of every message decoder (issue 9):
whatever arrives, decoding never raises past the guard, validation raises only
ProtocolError, and the policy answers None or a refusal. The acceptor's handlers are
fuzzed in tests/integration/test_fuzz_handlers.py. Budget: a few hundred examples."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paxos_commit import authz
from paxos_commit.guard import DecodedBatch, Undecodable, decode_batch
from rm_sdk.identity import Identity
from rm_sdk.protocol import ProtocolError
from rm_sdk.wire import ballot_from_pb, outcome_from_pb, pb, states_from_pb, value_from_pb

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

ids = st.one_of(
    st.sampled_from(["t1", "rm-a", "rm-b", "@registrar", "", "x" * 129, "bad id", "é"]),
    st.text(max_size=20),
)
rounds = st.one_of(
    st.sampled_from([0, 1, 2, 9, 2**32, 2**62, 2**62 + 1, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
ballots = st.builds(
    lambda r, leader: pb.Ballot(round=r, leader=leader),
    rounds,
    st.sampled_from(["", "c.1", "rm-rm-a-0123abcd", "bad leader"]),
)
votes = st.integers(0, 4)  # includes unspecified and unknown enum numbers
values = st.one_of(
    st.builds(lambda v: pb.Value(vote=v), votes),  # type: ignore[arg-type]
    st.builds(lambda rms: pb.Value(rm_set=pb.RMSet(rm_ids=rms)), st.lists(ids, max_size=4)),
    st.just(pb.Value(no_set=pb.NoSet())),
    st.just(pb.Value()),
)
proposals = st.builds(lambda i, v: pb.Proposal(instance=i, value=v), ids, values)
requests = st.one_of(
    st.builds(
        lambda t, b, ins: pb.AcceptorRequest(phase1a=pb.Phase1aRequest(txn_id=t, ballot=b, instances=ins)),
        ids,
        ballots,
        st.lists(ids, max_size=4),
    ),
    st.builds(
        lambda t, b, ps: pb.AcceptorRequest(phase2a=pb.Phase2aRequest(txn_id=t, ballot=b, proposals=ps)),
        ids,
        ballots,
        st.lists(proposals, max_size=4),
    ),
    st.builds(
        lambda t, w: pb.AcceptorRequest(await_phase2b=pb.AwaitPhase2bRequest(txn_id=t, wait_ms=w)),
        ids,
        st.integers(0, 20),
    ),
    st.builds(
        lambda t, o: pb.AcceptorRequest(record_outcome=pb.RecordOutcomeRequest(txn_id=t, outcome=o)),
        ids,
        st.integers(0, 5),
    ),
    st.just(pb.AcceptorRequest()),
)
identities = st.one_of(
    st.none(),
    st.sampled_from(
        [
            Identity("coordinator", "c0"),
            Identity("rm", "rm-a"),
            Identity("rm", "rm-b"),
            Identity("app", "shop"),
            Identity("admin", "ops"),
            Identity("acceptor", "0"),
        ]
    ),
)


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@FUZZ
@given(
    st.lists(requests, max_size=6),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_batch_decoding_never_raises(reqs: list[pb.AcceptorRequest], flips: list[tuple[int, int]]) -> None:
    raw = _mutate(pb.AcceptorRequestBatch(requests=reqs).SerializeToString(), flips)
    out = decode_batch(pb.AcceptorRequestBatch, pb.AcceptorRequest, raw)
    # Always a batch the stream handler can read (serve_stream reads .requests and .lamport).
    assert isinstance(out, (pb.AcceptorRequestBatch, DecodedBatch))
    assert isinstance(out.lamport, int)
    for r in out.requests:
        assert isinstance(r, (pb.AcceptorRequest, Undecodable))


@FUZZ
@given(st.binary(max_size=200))
def test_coordinator_batch_decoding_never_raises(raw: bytes) -> None:
    out = decode_batch(pb.CoordinatorRequestBatch, pb.CoordinatorRequest, raw)
    assert isinstance(out, (pb.CoordinatorRequestBatch, DecodedBatch))
    assert all(isinstance(r, (pb.CoordinatorRequest, Undecodable)) for r in out.requests)


@FUZZ
@given(
    ballots,
    values,
    st.lists(
        st.builds(lambda i, b, v: pb.InstanceState(instance=i, mbal=b, bal=b, val=v), ids, ballots, values),
        max_size=3,
    ),
    st.integers(0, 5),
)
def test_wire_validation_raises_only_protocol_errors(
    b: pb.Ballot, v: pb.Value, states: list[pb.InstanceState], outcome: int
) -> None:
    for decode, arg in (
        (ballot_from_pb, b),
        (value_from_pb, v),
        (states_from_pb, states),
        (outcome_from_pb, outcome),
    ):
        with contextlib.suppress(ProtocolError):
            decode(arg)  # type: ignore[operator]


@FUZZ
@given(requests, identities)
def test_the_policy_answers_every_message(req: pb.AcceptorRequest, ident: Identity | None) -> None:
    kind = req.WhichOneof("msg")
    if kind is None:
        return
    r = authz.check(ident, getattr(req, kind))
    assert r is None or r.code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
