"""Unit tests for the leader's and registrar's pure rules (``coordinator.rules``).

Each test cites what it checks: a section of Gray & Lamport, "Consensus on Transaction
Commit" (TODS 2006), or an action/operator of our TLA+ spec ``spec/PaxosCommit.tla`` (which
follows the code where it differs from the tlaplus Examples' ``PaxosCommit``). Tests named
``test_pitfallN_*`` would fail if DESIGN.md section 2, pitfall N, were broken in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from acceptor.rules import phase1b, phase2b
from coordinator.rules import (
    BallotRun,
    Registration,
    RegistrationClosed,
    Tally,
    free_value,
    next_ballot,
    phase2a_value,
)
from rm_sdk.protocol import (
    NO_BALLOT,
    NO_SET,
    NO_VALUE,
    REGISTRAR,
    RM_BALLOT,
    Ballot,
    InstanceState,
    NoValue,
    ProtocolError,
    RMSet,
    Value,
    Vote,
    chosen,
    majority,
)

B1A = Ballot(1, "a")
B1B = Ballot(1, "b")
B2A = Ballot(2, "a")
B3A = Ballot(3, "a")
FRESH = InstanceState()


def accepted(bal: Ballot, val: Value, mbal: Ballot | None = None) -> InstanceState:
    return InstanceState(mbal=bal if mbal is None else mbal, bal=bal, val=val)


def promise(ballot: Ballot, bal: Ballot = NO_BALLOT, val: Value | None = None) -> InstanceState:
    """A 1b for ``ballot`` (spec Phase1b: ``mbal |-> m.bal``) reporting (bal, val)."""
    return InstanceState(mbal=ballot, bal=bal, val=NO_VALUE if val is None else val)


# --- Registration (paper section 6.2) ------------------------------------------------


def test_registration_close_fixes_the_joined_set() -> None:
    """Paper section 6.2 / spec Close: the ballot-0 2a proposes ``{r \\in RM : regRM[r] =
    "joined"}``."""
    reg = Registration()
    reg.join("rm1")
    reg.join("rm2")
    assert reg.close() == RMSet.of(["rm1", "rm2"])


def test_registration_join_is_idempotent() -> None:
    """Messages are duplicated (pitfall 6): a duplicated join changes nothing."""
    reg = Registration()
    reg.join("rm1")
    reg.join("rm1")
    assert reg.close() == RMSet.of(["rm1"])


def test_registration_join_after_close_fails() -> None:
    """Paper section 6.2 / spec Join: enabled only while ``regState = "open"``; after close
    an RM cannot join (its vote would not count, so it must not prepare)."""
    reg = Registration()
    reg.join("rm1")
    reg.close()
    with pytest.raises(RegistrationClosed):
        reg.join("rm2")
    assert reg.close() == RMSet.of(["rm1"])


def test_registration_closed_is_a_protocol_error() -> None:
    assert issubclass(RegistrationClosed, ProtocolError)
    assert RegistrationClosed.status == "FAILED_PRECONDITION"


def test_registration_duplicate_join_of_a_member_after_close_is_fine() -> None:
    """A member's join that was duplicated and delivered after close is harmless."""
    reg = Registration()
    reg.join("rm1")
    s = reg.close()
    reg.join("rm1")
    assert reg.close() == s


def test_registration_close_is_idempotent_and_a_snapshot() -> None:
    """The registrar's ballot-0 value must be one value (pitfall 2): closing twice returns the
    same set, and later changes to ``joined`` cannot alter it."""
    reg = Registration()
    reg.join("rm1")
    s = reg.close()
    reg.joined.add("intruder")
    assert reg.close() == s == RMSet.of(["rm1"])


def test_registration_close_with_no_joins_is_the_empty_set() -> None:
    assert Registration().close() == RMSet.of([])


@pytest.mark.parametrize("bad", ["", "a b", REGISTRAR, "x" * 129])
def test_registration_rejects_malformed_rm_ids(bad: str) -> None:
    reg = Registration()
    with pytest.raises(ProtocolError):
        reg.join(bad)
    assert reg.joined == set()


def test_registration_join_after_close_rejects_malformed_id_first() -> None:
    reg = Registration()
    reg.close()
    with pytest.raises(ProtocolError):
        reg.join("")


# --- next_ballot ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "above", [NO_BALLOT, RM_BALLOT, B1A, B1B, Ballot(1, "zzz"), Ballot(7, "a"), Ballot(0, "q")]
)
@pytest.mark.parametrize("leader", ["a", "b", "m"])
def test_pitfall2_next_ballot_is_a_leader_ballot_strictly_higher(leader: str, above: Ballot) -> None:
    """Pitfall 2: leaders never use ballot 0 (spec ``LeaderBallots(l)``: rounds >= 1), and a
    new ballot must beat every ballot seen (pitfall 5: the NACK's mbal says which)."""
    b = next_ballot(leader, above)
    assert b > above
    assert b.is_leader_ballot
    assert b.leader == leader


def test_pitfall2_ballots_of_different_leaders_never_collide() -> None:
    """Pitfall 2 / spec ``LeaderBallots(l) == {<<r, l>> : ...}``: ballots are partitioned
    among leader incarnations, so two starting from the same NACK pick different ballots."""
    assert next_ballot("inc-1", B2A) != next_ballot("inc-2", B2A)
    assert next_ballot("a", NO_BALLOT) == Ballot(1, "a")


# --- free_value / phase2a_value ------------------------------------------------------


def test_pitfall4_free_value_is_abort_never_prepared() -> None:
    """Pitfall 4 / spec ``FreeValue(i) == IF i = Registrar THEN NoSet ELSE "aborted"``."""
    assert free_value("rm1") is Vote.ABORTED
    assert free_value(REGISTRAR) is NO_SET


def test_pitfall4_phase2a_value_on_a_free_instance() -> None:
    promises = [promise(B1A), promise(B1A)]
    assert phase2a_value("rm1", promises) is Vote.ABORTED
    assert phase2a_value(REGISTRAR, promises) is NO_SET
    assert phase2a_value("rm1", []) is Vote.ABORTED


def test_phase2a_value_takes_the_value_of_the_highest_bal() -> None:
    """Spec Phase2a: ``\\E m \\in acc : \\A n \\in acc : BallotLE(n.bal, m.bal)`` proposes
    ``m.val``, the value of the highest ballot reported."""
    low = promise(B3A, RM_BALLOT, Vote.PREPARED)
    high = promise(B3A, B2A, Vote.ABORTED)
    none = promise(B3A)
    assert phase2a_value("rm1", [low, high, none]) is Vote.ABORTED
    assert phase2a_value("rm1", [none, high, low]) is Vote.ABORTED
    assert phase2a_value("rm1", [none, low]) is Vote.PREPARED


def test_pitfall4_a_reported_prepared_is_kept_not_aborted() -> None:
    """Spec Phase2a: the free value only when ``acc = {}``; if any 1b of the majority reports
    a value, the leader proposes it (here ``prepared``, possibly chosen)."""
    assert phase2a_value("rm1", [promise(B1A), promise(B1A, RM_BALLOT, Vote.PREPARED)]) is Vote.PREPARED
    s = RMSet.of(["rm1"])
    assert phase2a_value(REGISTRAR, [promise(B1A, RM_BALLOT, s), promise(B1A)]) == s


# --- BallotRun -----------------------------------------------------------------------


@pytest.mark.parametrize("bal", [RM_BALLOT, NO_BALLOT, Ballot(0, "a"), Ballot(1, "")])
def test_pitfall2_leaders_never_use_ballot_0(bal: Ballot) -> None:
    """Pitfall 2: ballot 0 belongs to the instance's owner (spec Phase1a/Phase2a: ``b \\in
    LeaderBallots(l)``)."""
    with pytest.raises(ProtocolError):
        BallotRun(bal, ["rm1"], 3)


def test_ballot_run_needs_a_majority_of_promises() -> None:
    """Spec Phase2a: ``\\E Q \\in Majority : ... \\A a \\in Q : \\E m \\in q1b : m.acc = a``."""
    run = BallotRun(B1A, ["rm1"], 3)
    assert run.proposals() is None
    run.on_phase1b(0, {"rm1": promise(B1A)})
    assert run.proposals() is None
    run.on_phase1b(1, {"rm1": promise(B1A)})
    assert run.proposals() == {"rm1": Vote.ABORTED}


def test_ballot_run_needs_a_majority_for_every_instance() -> None:
    run = BallotRun(B1A, ["rm1", REGISTRAR], 3)
    run.on_phase1b(0, {"rm1": promise(B1A), REGISTRAR: promise(B1A)})
    run.on_phase1b(1, {"rm1": promise(B1A)})
    assert run.proposals() is None
    run.on_phase1b(2, {REGISTRAR: promise(B1A)})
    assert run.proposals() == {"rm1": Vote.ABORTED, REGISTRAR: NO_SET}


def test_pitfall4_free_instance_gets_aborted_and_no_set_never_prepared() -> None:
    """Pitfall 4: a free instance is proposed ``aborted`` (registrar: no set), even if an
    acceptor outside the majority accepted ``prepared`` at ballot 0 (not chosen: the
    majority's 1b's would show it)."""
    run = BallotRun(B1A, ["rm1", REGISTRAR], 3)
    for acc in (0, 1):
        run.on_phase1b(acc, {"rm1": promise(B1A), REGISTRAR: promise(B1A)})
    assert run.proposals() == {"rm1": Vote.ABORTED, REGISTRAR: NO_SET}


def test_pitfall4_only_1bs_with_mbal_equal_to_the_ballot_count() -> None:
    """Pitfall 4 / spec Phase2a: ``q1b == {m \\in msgs : ... /\\ m.mbal = b ...}``. A 1b
    for a lower ballot (stale) or a higher one (a NACK) is not a promise for this ballot."""
    run = BallotRun(B2A, ["rm1"], 3)
    run.on_phase1b(0, {"rm1": promise(B2A)})
    run.on_phase1b(1, {"rm1": promise(B1A)})  # stale promise for an older ballot
    run.on_phase1b(2, {"rm1": promise(B3A)})  # promised someone higher: NACK
    run.on_phase1b(1, {"rm1": FRESH})  # a state with mbal 0
    assert run.proposals() is None


def test_pitfall4_stale_1b_reporting_a_value_does_not_steer_the_proposal() -> None:
    """A stale 1b (lower mbal) might report a value that a later ballot overwrote; only the
    promises for this ballot decide the value."""
    run = BallotRun(B3A, ["rm1"], 3)
    run.on_phase1b(0, {"rm1": promise(B1A, RM_BALLOT, Vote.PREPARED)})
    run.on_phase1b(1, {"rm1": promise(B3A, B2A, Vote.ABORTED)})
    assert run.proposals() is None
    run.on_phase1b(2, {"rm1": promise(B3A)})
    assert run.proposals() == {"rm1": Vote.ABORTED}


def test_pitfall6_an_acceptor_is_counted_once_even_if_its_reply_is_duplicated() -> None:
    """Pitfall 6: messages are duplicated; a majority means distinct acceptors."""
    run = BallotRun(B1A, ["rm1"], 3)
    for _ in range(5):
        run.on_phase1b(0, {"rm1": promise(B1A)})
    assert run.proposals() is None
    run.on_phase1b(2, {"rm1": promise(B1A)})
    assert run.proposals() == {"rm1": Vote.ABORTED}


def test_pitfall2_ballot_run_proposals_never_change_once_computed() -> None:
    """Pitfall 2 / spec ``FreshBallot(l, b, i)``: at most one 2a per (instance, ballot). A 1b
    arriving after the proposals were computed (here reporting
    ``prepared``) must not yield a second, different 2a at this ballot."""
    run = BallotRun(B1A, ["rm1", REGISTRAR], 3)
    for acc in (0, 1):
        run.on_phase1b(acc, {"rm1": promise(B1A), REGISTRAR: promise(B1A)})
    first = run.proposals()
    assert first == {"rm1": Vote.ABORTED, REGISTRAR: NO_SET}
    run.on_phase1b(
        2,
        {
            "rm1": promise(B1A, RM_BALLOT, Vote.PREPARED),
            REGISTRAR: promise(B1A, RM_BALLOT, RMSet.of(["rm1"])),
        },
    )
    assert run.proposals() == first


def test_pitfall2_ballot_run_proposals_are_a_copy() -> None:
    run = BallotRun(B1A, ["rm1"], 1)
    run.on_phase1b(0, {"rm1": promise(B1A, RM_BALLOT, Vote.PREPARED)})
    got = run.proposals()
    assert got == {"rm1": Vote.PREPARED}
    got["rm1"] = Vote.ABORTED
    assert run.proposals() == {"rm1": Vote.PREPARED}


def test_ballot_run_reports_preemption_by_a_nack() -> None:
    """Pitfall 5: the NACK's mbal tells the leader which ballot to beat."""
    run = BallotRun(B1A, ["rm1"], 3)
    run.on_phase1b(0, {"rm1": promise(B1A)})
    assert not run.preempted
    run.on_phase1b(1, {"rm1": accepted(B3A, Vote.ABORTED)})
    assert run.preempted
    assert run.highest_seen == B3A
    assert next_ballot("a", run.highest_seen) > B3A


def test_ballot_run_ignores_instances_it_does_not_run() -> None:
    run = BallotRun(B1A, ["rm1"], 3)
    run.on_phase1b(0, {"rm1": promise(B1A), "rm2": promise(B3A)})
    assert not run.preempted
    run.on_phase1b(1, {"rm1": promise(B1A)})
    assert run.proposals() == {"rm1": Vote.ABORTED}


@pytest.mark.parametrize("acc", [-1, 3, 99])
def test_ballot_run_rejects_unknown_acceptors(acc: int) -> None:
    run = BallotRun(B1A, ["rm1"], 3)
    with pytest.raises(ProtocolError):
        run.on_phase1b(acc, {"rm1": promise(B1A)})


def test_ballot_run_with_one_acceptor_is_2pc() -> None:
    """Paper section 5: with F=0 one acceptor is a majority."""
    run = BallotRun(B1A, ["rm1"], 1)
    run.on_phase1b(0, {"rm1": promise(B1A, RM_BALLOT, Vote.PREPARED)})
    assert run.proposals() == {"rm1": Vote.PREPARED}


# --- Tally ---------------------------------------------------------------------------


def test_tally_chosen_over_reports() -> None:
    """Spec ``ChosenAt`` over the reports a leader collected (paper section 4)."""
    tally = Tally(3)
    tally.add(0, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)})
    assert chosen(tally.reports, 3) == {}
    tally.add(2, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)})
    assert chosen(tally.reports, 3) == {"rm1": Vote.PREPARED}


def test_pitfall6_tally_counts_a_duplicated_report_once() -> None:
    tally = Tally(3)
    for _ in range(3):
        tally.add(1, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)})
    assert chosen(tally.reports, 3) == {}


def test_pitfall6_reordered_reports_do_not_roll_back_tally() -> None:
    """Pitfall 6: never assume FIFO. An acceptor's ``bal`` never decreases (spec Phase2b
    needs ``BallotLE(mbal, m.bal)``), so a late, lower-ballot report is older: dropped."""
    tally = Tally(3)
    newer = accepted(B2A, Vote.ABORTED)
    older = accepted(RM_BALLOT, Vote.PREPARED)
    tally.add(0, {"rm1": newer})
    tally.add(0, {"rm1": older})
    assert tally.reports[0]["rm1"] == newer
    tally.add(1, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)})
    assert chosen(tally.reports, 3) == {}  # acceptor 0 no longer backs the ballot-0 value


def test_pitfall6_reordered_reports_same_bal_keep_the_higher_mbal() -> None:
    tally = Tally(3)
    later = InstanceState(mbal=B2A, bal=RM_BALLOT, val=Vote.PREPARED)  # a 1b after the 2b
    earlier = accepted(RM_BALLOT, Vote.PREPARED)
    tally.add(0, {"rm1": later})
    tally.add(0, {"rm1": earlier})
    assert tally.reports[0]["rm1"] == later


def test_tally_result_is_independent_of_arrival_order() -> None:
    msgs = [
        (0, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}),
        (0, {"rm1": accepted(B1A, Vote.ABORTED)}),
        (1, {"rm1": promise(B1A, RM_BALLOT, Vote.PREPARED)}),
        (1, {"rm1": accepted(B1A, Vote.ABORTED)}),
        (2, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)}),
    ]
    forward, backward = Tally(3), Tally(3)
    for acc, states in msgs:
        forward.add(acc, states)
    for acc, states in reversed(msgs):
        backward.add(acc, states)
    assert forward.reports == backward.reports
    assert chosen(forward.reports, 3) == {"rm1": Vote.ABORTED}


def test_tally_known_set() -> None:
    tally = Tally(3)
    assert tally.known_set() is None
    tally.add(0, {"rm1": accepted(RM_BALLOT, Vote.PREPARED), REGISTRAR: promise(B1A)})
    assert tally.known_set() is None
    s = RMSet.of(["rm1", "rm2"])
    tally.add(2, {REGISTRAR: accepted(RM_BALLOT, s)})
    assert tally.known_set() == s
    assert tally.instances() == {"rm1", REGISTRAR}


def test_tally_known_set_from_a_1b() -> None:
    """A 1b reports what the acceptor accepted: a set learned there is the ballot-0 set too
    (spec ``SetsSeen``: every report of a set repeats the owner's)."""
    tally = Tally(3)
    s = RMSet.of(["rm1"])
    tally.add(1, {REGISTRAR: promise(B2A, RM_BALLOT, s)})
    assert tally.known_set() == s


def test_tally_known_set_ignores_no_set() -> None:
    tally = Tally(3)
    tally.add(0, {REGISTRAR: accepted(B1A, NO_SET)})
    assert tally.known_set() is None


@pytest.mark.parametrize("acc", [-1, 3])
def test_tally_rejects_unknown_acceptors(acc: int) -> None:
    with pytest.raises(ProtocolError):
        Tally(3).add(acc, {"rm1": accepted(RM_BALLOT, Vote.PREPARED)})


# --- Property: single-instance Paxos over a hostile network ---------------------------

N_ACC = 3


@dataclass
class Leader:
    name: str
    incarnation: int = 0
    run: BallotRun | None = None
    seen: Ballot = NO_BALLOT  # forgotten on restart: fresh incarnation ids keep ballots apart

    @property
    def ident(self) -> str:
        return f"{self.name}-{self.incarnation}"


@dataclass
class World:
    ins: str
    owner_value: Value | None
    acceptors: list[InstanceState] = field(default_factory=lambda: [InstanceState()] * N_ACC)
    leaders: list[Leader] = field(default_factory=lambda: [Leader("L0"), Leader("L1")])
    runs: dict[Ballot, BallotRun] = field(default_factory=dict)
    replies: list[tuple[int, InstanceState]] = field(default_factory=list)
    history: set[tuple[int, Ballot, Value]] = field(default_factory=set)
    sent_2a: dict[Ballot, Value] = field(default_factory=dict)
    tally: Tally = field(default_factory=lambda: Tally(N_ACC))

    def accept(self, acc: int, bal: Ballot, val: Value) -> None:
        st_ = phase2b(self.acceptors[acc], bal, val)  # a ConflictError here fails the test
        self.acceptors[acc] = st_
        if not isinstance(st_.val, NoValue):
            self.history.add((acc, st_.bal, st_.val))
        self.replies.append((acc, st_))

    def deliver(self, src: int, state: InstanceState) -> None:
        """A reply (1b or 2b) reaches the leaders: every run filters what counts for it."""
        for run in self.runs.values():
            run.on_phase1b(src, {self.ins: state})
        for ldr in self.leaders:
            if ldr.run is not None:
                ldr.seen = max(ldr.seen, ldr.run.highest_seen)
        self.tally.add(src, {self.ins: state})

    def step(self, kind: int, acc: int, who: int, now: bool, old: int) -> None:
        leader = self.leaders[who]
        if kind == 0 and self.owner_value is not None:  # owner's ballot-0 2a
            self.accept(acc, RM_BALLOT, self.owner_value)
        elif kind == 1:  # the leader times out and starts a higher ballot
            ballot = next_ballot(leader.ident, leader.seen)
            leader.seen = ballot
            leader.run = self.runs[ballot] = BallotRun(ballot, [self.ins], N_ACC)
        elif kind == 2 and leader.run is not None:  # a 1a reaches an acceptor
            self.acceptors[acc] = phase1b(self.acceptors[acc], leader.run.ballot)
            self.replies.append((acc, self.acceptors[acc]))
        elif kind == 3 and leader.run is not None:  # a 2a reaches an acceptor
            props = leader.run.proposals()
            if props is not None:
                val = props[self.ins]
                assert self.sent_2a.setdefault(leader.run.ballot, val) == val
                self.accept(acc, leader.run.ballot, val)
        elif kind == 4 and self.replies:  # an old reply, again or late: any order
            self.deliver(*self.replies[-1 - old % len(self.replies)])
            return
        elif kind == 5:  # the leader crashes and restarts with a fresh id, no memory
            leader.incarnation += 1
            leader.run = None
            leader.seen = NO_BALLOT
        if now and self.replies:  # the newest reply arrives at once (else: lost or late)
            self.deliver(*self.replies[-1])

    def chosen_values(self) -> set[Value]:
        count: dict[tuple[Ballot, Value], int] = {}
        for _, bal, val in self.history:
            count[(bal, val)] = count.get((bal, val), 0) + 1
        return {val for (_, val), n in count.items() if n >= majority(N_ACC)}


owners = st.sampled_from(
    [
        ("rm1", Vote.PREPARED),
        ("rm1", Vote.ABORTED),
        ("rm1", None),
        (REGISTRAR, RMSet.of(["rm1", "rm2"])),
        (REGISTRAR, NO_SET),  # spec ApplicationAbort
        (REGISTRAR, None),
    ]
)
# Step kinds: 0 owner's 2a, 1 start a ballot, 2 deliver a 1a, 3 deliver a 2a, 4 deliver an
# old reply again, 5 restart a leader. Weighted so that ballots often get to their 2a's.
KINDS = (0, 0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5)


def decode(n: int) -> tuple[int, int, int, bool, int]:
    """One step from one integer (cheap to generate, still shrinks): kind, acceptor, leader,
    whether the newest reply arrives at once, and which old reply to deliver."""
    n, kind = divmod(n, len(KINDS))
    n, acc = divmod(n, N_ACC)
    n, who = divmod(n, 4)  # mostly leader 0: duels are rarer than single ballots
    n, now = divmod(n, 4)  # mostly delivered at once
    return KINDS[kind], acc, int(who == 3), now != 3, n


schedule = st.lists(st.integers(0, len(KINDS) * N_ACC * 16 * 8 - 1), min_size=20, max_size=100)


@settings(max_examples=200, deadline=None, database=None)
@given(owners, schedule)
def test_property_paxos_instance_chooses_at_most_one_value(
    owner: tuple[str, Value | None], steps: list[int]
) -> None:
    """Spec invariant ``OneValuePerInstance`` on one instance driven by the real rules, with
    loss, duplication, reordering, two competing leaders and leader restarts under fresh
    ids: never two chosen values; never two 2a's at one ballot (pitfall 2, ``FreshBallot``);
    only the owner's value or ``FreeValue`` is ever accepted (pitfall 4); the Tally never
    reports a value that was not chosen (pitfall 6).

    A randomized smoke check, not a model checker: seeded mutations of the core showed it
    catches some safety bugs but not all; the targeted tests above, TLC on the spec and the
    seeded simulation are the thorough checks."""
    ins, value = owner
    free = NO_SET if ins == REGISTRAR else Vote.ABORTED
    world = World(ins, value)
    for step in steps:
        world.step(*decode(step))
        every = world.chosen_values()
        assert len(every) <= 1
        for _, bal, val in world.history:
            # Only the owner's value or the free value is ever accepted.
            assert val in (value, free)
            if bal == RM_BALLOT:
                assert val == value
        for st_ in world.acceptors:
            assert st_.mbal >= st_.bal
        told = chosen(world.tally.reports, N_ACC)
        assert set(told.values()) <= every
    # Steer the search toward histories where many (ballot, value) pairs were accepted.
    target(float(len({(bal, val) for _, bal, val in world.history})))


def test_pitfall2_ballot_source_never_hands_out_a_ballot_twice() -> None:
    """Pitfall 2: a leader that runs recovery again (a second GetOutcome, a retry after a
    failed ballot) must not restart at round 1: a second 2a at a ballot it already used
    could carry a different value. Every ballot from one source is fresh."""
    from coordinator.rules import BallotSource

    src = BallotSource("L")
    seen = []
    for above in [NO_BALLOT, NO_BALLOT, Ballot(1, "L"), Ballot(5, "M"), NO_BALLOT, Ballot(2, "A")]:
        b = src.next(above)
        assert b > above and b.leader == "L" and b.is_leader_ballot
        assert all(b > earlier for earlier in seen)
        seen.append(b)
