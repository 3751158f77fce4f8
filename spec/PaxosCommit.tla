---------------------------- MODULE PaxosCommit ----------------------------
(***************************************************************************)
(* Paxos Commit with a registrar, as paxos-commit implements it.           *)
(*                                                                         *)
(* Gray & Lamport, "Consensus on Transaction Commit", TODS 2006: sections  *)
(* 4 (Paxos Commit), 5 (F = 0 is two-phase commit) and 6.2 (registration). *)
(* The paper's appendix and the PaxosCommit module of tlaplus/Examples are *)
(* the references; where they differ, this module follows our code:        *)
(*                                                                         *)
(*  - Ballots are <<round, leader>> pairs ordered lexicographically        *)
(*    (rm_sdk/protocol.py Ballot). Round 0 with leader 0 is the instance   *)
(*    owner's ballot (an RM's vote, the registrar's set); leader ballots   *)
(*    have round >= 1 and a leader incarnation id >= 1. Ballots are thus   *)
(*    partitioned among leaders, and a restarted leader, which takes a     *)
(*    fresh id, never shares a ballot with its earlier incarnation.        *)
(*  - Besides one instance per RM there is the registrar's instance. Its   *)
(*    values are participant sets and NoSet (the paper's bottom).          *)
(*  - Commit iff the registrar chose a set S and every RM in S chose       *)
(*    "prepared"; abort iff the registrar chose NoSet or some RM of S      *)
(*    chose "aborted" (rm_sdk/protocol.py decide).                         *)
(*  - A leader's ballot is one request per phase naming several instances, *)
(*    and an acceptor handles each request in one durable step             *)
(*    (acceptor/service.py: one store.apply per RPC), as in the code. The  *)
(*    paper's per-instance messages would also cover other batchings, at a *)
(*    state-space cost TLC cannot pay here.                                *)
(*                                                                         *)
(* Failures. Messages live in the set msgs, which only grows. Receiving    *)
(* never removes a message, so a message can be received any number of     *)
(* times (duplication), in any order (reordering), or never (loss). We do  *)
(* not add a LoseMessage action: for safety, a behaviour in which a        *)
(* message is dropped is matched step for step by one in which it stays in *)
(* msgs and is never received, so removing messages would only add states, *)
(* not behaviours that can break an invariant. Any process may stop taking *)
(* steps at any time (a crash; there is no fairness) and resume later:     *)
(*  - An acceptor's state is all durable (acceptor/storage.py writes it    *)
(*    before replying), so a restart loses only what was in flight, that   *)
(*    is, messages it never receives. AcceptorRestart makes this explicit: *)
(*    the state after a restart is Restarted(state before), the identity.  *)
(*  - Leaders keep only soft state. A restarted leader comes back under a  *)
(*    new id: another element of Leader.                                   *)
(*  - The owner (registrar) keeps its registration in memory. If it dies   *)
(*    it stops; RMs may then abort on their own while working, and         *)
(*    recovery leaders settle its instance. regState records only what it  *)
(*    has already sent.                                                    *)
(*  - An RM's "prepared" is durable before its vote leaves (pitfall 3). A  *)
(*    working RM that crashes loses its work: it acts like an RM that      *)
(*    never votes, which the model already allows.                         *)
(*                                                                         *)
(* Collection (DESIGN.md pitfall 8). An RM acknowledges an outcome once it *)
(* applied it durably (RMAck). An acceptor may then collect the            *)
(* transaction (Collect): it drops its instance state and keeps a compact  *)
(* outcome record, from which it answers every late 1a or 2a               *)
(* (AnswerFromRecord: the recorded outcome, never a promise or an accept,  *)
(* so never new instance state). After the retention setting the record   *)
(* goes too (Expire): the acceptor then takes no step for the transaction. *)
(* A transaction is collectable once its outcome is decided and recorded   *)
(* (the outcome message stands for both) and every RM of the registrar's   *)
(* set acknowledged. OutcomeLearnable says why the acknowledgements are    *)
(* needed: a prepared RM must always be able to learn the outcome.         *)
(*                                                                         *)
(* Restarted, FreshBallot, CanAbortUnilaterally and AllAcknowledged are    *)
(* where pitfalls 1-3 and 8 would enter. The seeded mutations in           *)
(* mutations/ each override one of them from a TLC config                  *)
(* (Def <- MutatedDef).                                                    *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS
    RM,         \* the resource managers that may join the transaction
    Acceptor,   \* the 2F+1 acceptors
    Leader,     \* leader incarnation ids: integers >= 1 (ordered, like the code's strings)
    MaxRound,   \* leaders use rounds 1..MaxRound (bounds the model)
    Registrar,  \* the registrar's instance (rm_sdk/protocol.py REGISTRAR)
    NoSet,      \* the registrar's "no set" value: abort (protocol.py NO_SET)
    None        \* "nothing accepted yet" (protocol.py NO_VALUE)

ASSUME
    /\ Leader \subseteq Nat \ {0}
    /\ MaxRound \in Nat \ {0}
    /\ Registrar \notin RM
    /\ Acceptor # {}

-----------------------------------------------------------------------------
(* Ballots (protocol.py Ballot, NO_BALLOT, RM_BALLOT).                     *)

Ballot0  == <<0, 0>>     \* the instance owner's ballot
NoBallot == <<-1, 0>>    \* bal of an acceptor that accepted nothing

LeaderBallots(l) == {<<r, l>> : r \in 1..MaxRound}
LeaderBallot     == UNION {LeaderBallots(l) : l \in Leader}
Ballot           == {Ballot0} \cup LeaderBallot

BallotLT(b, c) == \/ b[1] < c[1]
                  \/ b[1] = c[1] /\ b[2] < c[2]
BallotLE(b, c) == b = c \/ BallotLT(b, c)

(* Instances and their values.                                             *)
Ins == RM \cup {Registrar}

Value(i) == IF i = Registrar THEN {NoSet} \cup SUBSET RM
                             ELSE {"prepared", "aborted"}

\* What a leader proposes in an instance in which no promising acceptor
\* has accepted anything (rm_sdk/ballots.py free_value, pitfall 4).
FreeValue(i) == IF i = Registrar THEN NoSet ELSE "aborted"

\* Majorities of acceptors. With one acceptor (F = 0) it is {{a}}.
IsMajority(Q) == 2 * Cardinality(Q) > Cardinality(Acceptor)

-----------------------------------------------------------------------------
VARIABLES
    rmState,   \* rmState[r]: the RM's own state (rm_sdk/participant.py RMState)
    regRM,     \* regRM[r]: "unknown", "joined" or "excluded" (registrar soft state)
    regState,  \* "open", "closed" (ballot-0 set sent) or "aborted" (ballot-0 NoSet sent)
    aState,    \* aState[i][a]: acceptor a's durable [mbal, bal, val] of instance i
    msgs,      \* every message ever sent
    acked,     \* the RMs that acknowledged the outcome (the owner's tally of acks)
    coll       \* coll[a]: "live", the outcome record ("commit"/"abort"), or "gone"

vars == <<rmState, regRM, regState, aState, msgs, acked, coll>>

\* Variables that only the collection actions change.
collVars == <<acked, coll>>

Send(m) == msgs' = msgs \cup {m}

\* One proposal of a 2a: a value for one instance.
Proposal == UNION {[ins : {i}, val : Value(i)] : i \in Ins}

Message ==
         [type : {"phase1a"}, bal : LeaderBallot, ins : SUBSET Ins]
    \cup UNION {[type : {"phase1b"}, ins : {i}, acc : Acceptor, mbal : LeaderBallot,
                 bal : Ballot \cup {NoBallot}, val : {None} \cup Value(i)] : i \in Ins}
    \cup [type : {"phase2a"}, bal : Ballot, prop : SUBSET Proposal]
    \cup UNION {[type : {"phase2b"}, ins : {i}, acc : Acceptor, bal : Ballot,
                 val : Value(i)] : i \in Ins}
    \cup [type : {"outcome"}, out : {"commit", "abort"}]

TypeOK ==
    /\ rmState \in [RM -> {"working", "prepared", "committed", "aborted"}]
    /\ regRM \in [RM -> {"unknown", "joined", "excluded"}]
    /\ regState \in {"open", "closed", "aborted"}
    /\ DOMAIN aState = Ins
    /\ \A i \in Ins : /\ DOMAIN aState[i] = Acceptor
                      /\ \A a \in Acceptor :
                           aState[i][a] \in [mbal : Ballot, bal : Ballot \cup {NoBallot},
                                             val : {None} \cup Value(i)]
    /\ msgs \subseteq Message
    /\ acked \subseteq RM
    /\ coll \in [Acceptor -> {"live", "commit", "abort", "gone"}]
    \* a 2a proposes at most one value per instance
    /\ \A m \in msgs : m.type = "phase2a" =>
           \A p, q \in m.prop : p.ins = q.ins => p = q

-----------------------------------------------------------------------------
(* What has been chosen, and the decision rule (protocol.py chosen/decide).*)

\* The 2b's of instance i: acceptor m.acc accepted m.val at ballot m.bal.
Votes(i) == {m \in msgs : m.type = "phase2b" /\ m.ins = i}

\* A value is chosen in i if a majority accepted it at one ballot. Every 2b
\* ever sent stays in msgs, so this is the paper's "chosen", which no
\* leader may know yet; a leader that knows it may decide.
ChosenValues(i) ==
    LET V == Votes(i)
    IN  {m.val : m \in {n \in V : IsMajority({k.acc : k \in {k \in V : /\ k.bal = n.bal
                                                                     /\ k.val = n.val}})}}

\* Participant sets a leader may know: the owner's ballot-0 set, which every
\* acceptor report or leader proposal of a set repeats. A leader learns it
\* from acceptor reports (rm_sdk/ballots.py Tally.known_set); knowing it
\* from the 2a is more knowledge, so more behaviours, than the code has.
SetsSeen ==
    LET props == UNION {m.prop : m \in {n \in msgs : n.type = "phase2a"}}
    IN  {p.val : p \in {q \in props : q.ins = Registrar /\ q.val # NoSet}}

CommitRule ==
    \E s \in ChosenValues(Registrar) :
        /\ s # NoSet
        /\ \A r \in s : "prepared" \in ChosenValues(r)

\* Only the owner proposes a set, once, at ballot 0, and leaders only repeat
\* values they find in 1b's: the registrar can choose only that set or
\* NoSet, and an aborted member means abort either way. So an aborted vote
\* of a member of a known set decides before the registrar's instance does.
AbortRule ==
    \/ NoSet \in ChosenValues(Registrar)
    \/ \E s \in SetsSeen : \E r \in s : "aborted" \in ChosenValues(r)

\* The outcomes ever announced. msgs only grows, so this set is a history
\* variable: an outcome once decided stays in Decided, and a later
\* different decision would make the set larger than one.
Decided == {m.out : m \in {n \in msgs : n.type = "outcome"}}

-----------------------------------------------------------------------------
(* Mutation points. Each is overridden in one mutations/ model.            *)

\* An acceptor's state of one instance after a crash and restart: all of
\* it is durable (pitfall 1).
Restarted(s) == s

\* Leader l has not yet sent a 2a at its ballot b. It sends at most one, so
\* never two different values at one (instance, ballot) (pitfall 2;
\* rm_sdk/ballots.py BallotRun computes its proposals once).
FreshBallot(l, b) == ~\E m \in msgs : m.type = "phase2a" /\ m.bal = b

\* An RM may abort on its own only before it prepared (pitfall 3).
CanAbortUnilaterally(r) == rmState[r] = "working"

\* Registration is over and every RM of the registrar's set acknowledged the
\* outcome (pitfall 8). The set is the joined RMs: the owner's set at
\* Close, and on its abort every RM that joined (and so may have acted).
\* While registration is open the set is not final: a recovery leader may
\* have decided "no set" while an RM still joins, prepares and must learn.
\* Whether the model runs collection at all: MC_F1 and MC_F1_Recovery turn
\* it off (their state spaces grow tenfold with it), MC_F1_Collect and
\* MC_F0 check it.
CollectionEnabled == TRUE

AllAcknowledged ==
    /\ regState # "open"
    /\ {r \in RM : regRM[r] = "joined"} \subseteq acked

-----------------------------------------------------------------------------
PCInit ==
    /\ rmState  = [r \in RM |-> "working"]
    /\ regRM    = [r \in RM |-> "unknown"]
    /\ regState = "open"
    /\ aState   = [i \in Ins |-> [a \in Acceptor |->
                       [mbal |-> Ballot0, bal |-> NoBallot, val |-> None]]]
    /\ msgs     = {}
    /\ acked    = {}
    /\ coll     = [a \in Acceptor |-> "live"]

(* Registration (paper section 6.2; coordinator/rules.py Registration).    *)

\* An RM joins while registration is open.
Join(r) ==
    /\ regState = "open"
    /\ regRM[r] = "unknown"
    /\ regRM' = [regRM EXCEPT ![r] = "joined"]
    /\ UNCHANGED <<rmState, regState, aState, msgs, collVars>>

\* The code's close is one atomic step that shuts out every RM that has not
\* joined. Here it is one Exclude step per absent RM, then Close. The code's
\* close is such a sequence with nothing in between, so every behaviour of
\* the code is one of this spec; separate steps let the refinement mapping
\* below move one RM at a time.
Exclude(r) ==
    /\ regState = "open"
    /\ regRM[r] = "unknown"
    /\ regRM' = [regRM EXCEPT ![r] = "excluded"]
    /\ UNCHANGED <<rmState, regState, aState, msgs, collVars>>

\* The owner closes registration: its ballot-0 2a proposes the joined set,
\* and the RMs are told to prepare (coordinator/service.py _decide_owned).
Close ==
    /\ regState = "open"
    /\ \A r \in RM : regRM[r] # "unknown"
    /\ regState' = "closed"
    /\ Send([type |-> "phase2a", bal |-> Ballot0,
             prop |-> {[ins |-> Registrar, val |-> {r \in RM : regRM[r] = "joined"}]}])
    /\ UNCHANGED <<rmState, regRM, aState, collVars>>

\* The application (or the transaction timeout) aborts before commit: the
\* owner's ballot-0 2a proposes NoSet, and later joins fail.
ApplicationAbort ==
    /\ regState = "open"
    /\ regState' = "aborted"
    /\ Send([type |-> "phase2a", bal |-> Ballot0, prop |-> {[ins |-> Registrar, val |-> NoSet]}])
    /\ UNCHANGED <<rmState, regRM, aState, collVars>>

(* Resource managers (rm_sdk/participant.py Participant).                  *)

\* Told to prepare (only after Close), the RM makes its work durable and
\* votes: a 2a at its own ballot 0.
RMPrepare(r) ==
    /\ regRM[r] = "joined"
    /\ regState = "closed"
    /\ rmState[r] = "working"
    /\ rmState' = [rmState EXCEPT ![r] = "prepared"]
    /\ Send([type |-> "phase2a", bal |-> Ballot0, prop |-> {[ins |-> r, val |-> "prepared"]}])
    /\ UNCHANGED <<regRM, regState, aState, collVars>>

\* The RM aborts on its own (its prepare failed, or the owner is gone) and
\* says so at ballot 0.
RMChooseToAbort(r) ==
    /\ regRM[r] = "joined"
    /\ CanAbortUnilaterally(r)
    /\ rmState' = [rmState EXCEPT ![r] = "aborted"]
    /\ Send([type |-> "phase2a", bal |-> Ballot0, prop |-> {[ins |-> r, val |-> "aborted"]}])
    /\ UNCHANGED <<regRM, regState, aState, collVars>>

RMRcvCommitMsg(r) ==
    /\ rmState[r] = "prepared"
    /\ [type |-> "outcome", out |-> "commit"] \in msgs
    /\ rmState' = [rmState EXCEPT ![r] = "committed"]
    /\ UNCHANGED <<regRM, regState, aState, msgs, collVars>>

RMRcvAbortMsg(r) ==
    /\ regRM[r] = "joined"
    /\ rmState[r] \in {"working", "prepared"}
    /\ [type |-> "outcome", out |-> "abort"] \in msgs
    /\ rmState' = [rmState EXCEPT ![r] = "aborted"]
    /\ UNCHANGED <<regRM, regState, aState, msgs, collVars>>

(* Leaders: coordinators and RMs (rm_sdk/ballots.py, rm_sdk/leader.py).    *)

\* Instances a leader can know of: the registrar's, and those of RMs that
\* joined (the set S, or an RM whose vote an acceptor reported). Others
\* never get a vote and never matter to the decision.
LiveIns == {Registrar} \cup {r \in RM : regRM[r] = "joined"}

\* The instance sets a ballot may cover. The code takes the registrar, S if
\* known and the instances acceptors reported, minus those already decided:
\* some nonempty subset of LiveIns. (A model may override this to shrink
\* the state space; per-instance safety does not depend on which instances
\* share a ballot.)
BallotInstances == {I \in SUBSET LiveIns : I # {}}

\* Leader l starts its ballot b (one BallotRun): one 1a per ballot, and an
\* incarnation's ballots increase (rm_sdk/ballots.py BallotSource).
Phase1a(l, b) ==
    /\ b \in LeaderBallots(l)
    /\ ~\E m \in msgs : m.type = "phase1a" /\ m.bal[2] = l /\ BallotLE(b, m.bal)
    /\ \E I \in BallotInstances : Send([type |-> "phase1a", bal |-> b, ins |-> I])
    /\ UNCHANGED <<rmState, regRM, regState, aState, collVars>>

\* The values a leader may propose in instance i at ballot b: for a majority
\* Q that promised b, the value of the highest ballot any of Q accepted, or
\* the free value if none did (rm_sdk/ballots.py phase2a_value, which may
\* use more than a majority: the highest of a superset is the highest of
\* some majority in it). Ties at the highest ballot are broken arbitrarily,
\* as phase2a_value does; while FreshBallot holds they cannot disagree.
\* (BallotRun also counts a reply to a repeated 1a, whose mbal already is b,
\* as a promise with the acceptor's current state. Until the leader's own 2a
\* at b that state is the one its first 1b reported, so the 1b messages
\* here carry the same information.)
ProposableValues(i, b) ==
    LET q1b       == {m \in msgs : m.type = "phase1b" /\ m.ins = i /\ m.mbal = b}
        promisers == {m.acc : m \in q1b}
        ValuesOf(Q) ==
            LET acc == {m \in q1b : m.acc \in Q /\ m.bal # NoBallot}
            IN  IF acc = {} THEN {FreeValue(i)}
                ELSE {m.val : m \in {n \in acc : \A k \in acc : BallotLE(k.bal, n.bal)}}
    IN  UNION {ValuesOf(Q) : Q \in {Q \in SUBSET promisers : IsMajority(Q)}}

\* Once every instance of its 1a has a majority of promises, leader l sends
\* one 2a with a value for each (BallotRun.proposals).
Phase2a(l, b) ==
    /\ b \in LeaderBallots(l)
    /\ FreshBallot(l, b)
    /\ \E m \in msgs :
         /\ m.type = "phase1a"
         /\ m.bal = b
         /\ LET pv == [i \in m.ins |-> ProposableValues(i, b)]
            IN  /\ \A i \in m.ins : pv[i] # {}
                /\ \E P \in SUBSET UNION {{[ins |-> i, val |-> v] : v \in pv[i]} : i \in m.ins} :
                     /\ \A i \in m.ins : Cardinality({p \in P : p.ins = i}) = 1
                     /\ Send([type |-> "phase2a", bal |-> b, prop |-> P])
    /\ UNCHANGED <<rmState, regRM, regState, aState, collVars>>

\* A leader (the owner included) that sees the decision rule hold announces
\* the outcome to the RMs and records it at the acceptors (rm_sdk/leader.py
\* evaluate, record_outcome). An outcome message stands for both. Several
\* replicas may announce the same outcome: then the step changes nothing.
\* An RM that learns the outcome by running ballots itself
\* (participant.py learn_from_acceptors) takes this step as a leader before
\* it applies the outcome.
Decide ==
    /\ \/ CommitRule /\ Send([type |-> "outcome", out |-> "commit"])
       \/ AbortRule  /\ Send([type |-> "outcome", out |-> "abort"])
    /\ UNCHANGED <<rmState, regRM, regState, aState, collVars>>

(* Acceptors (acceptor/rules.py phase1b, phase2b; acceptor/service.py).    *)

\* Acceptor a answers a 1a: it promises the ballot in each named instance
\* whose mbal is lower. Instances at or above it are left alone (the code's
\* NACK tells the leader to move on; it carries nothing used for safety).
Phase1b(a) ==
    /\ coll[a] = "live"
    /\ \E m \in msgs :
         /\ m.type = "phase1a"
         /\ LET P == {i \in m.ins : BallotLT(aState[i][a].mbal, m.bal)}
            IN  /\ P # {}
                /\ aState' = [i \in Ins |-> IF i \in P
                                            THEN [aState[i] EXCEPT ![a].mbal = m.bal]
                                            ELSE aState[i]]
                /\ msgs' = msgs \cup
                     {[type |-> "phase1b", ins |-> i, acc |-> a, mbal |-> m.bal,
                       bal |-> aState[i][a].bal, val |-> aState[i][a].val] : i \in P}
    /\ UNCHANGED <<rmState, regRM, regState, collVars>>

\* Acceptor a answers a 2a: it accepts each proposal whose ballot is not
\* below its mbal. A different value at the ballot it already accepted is a
\* ConflictError, which refuses the whole request; the same value again
\* changes nothing (a duplicate).
Phase2b(a) ==
    /\ coll[a] = "live"
    /\ \E m \in msgs :
         /\ m.type = "phase2a"
         /\ LET st(p) == aState[p.ins][a]
                new    == {p \in m.prop : BallotLE(st(p).mbal, m.bal) /\ st(p).bal # m.bal}
                newIns == {p.ins : p \in new}
            IN  /\ new # {}
                /\ ~\E p \in m.prop : /\ BallotLE(st(p).mbal, m.bal)
                                      /\ st(p).bal = m.bal
                                      /\ st(p).val # p.val
                /\ aState' = [i \in Ins |->
                                IF i \in newIns
                                THEN [aState[i] EXCEPT ![a] =
                                        [mbal |-> m.bal, bal |-> m.bal,
                                         val |-> (CHOOSE p \in new : p.ins = i).val]]
                                ELSE aState[i]]
                /\ msgs' = msgs \cup {[type |-> "phase2b", ins |-> p.ins, acc |-> a,
                                       bal |-> m.bal, val |-> p.val] : p \in new}
    /\ UNCHANGED <<rmState, regRM, regState, collVars>>

\* A crash and restart of acceptor a: what it sent stays sent, what was sent
\* to it may never arrive, and its state is what Restarted keeps, which is
\* all of it: so here the step changes nothing. It is a step all the same,
\* so that a logged restart is a step of the spec (docs/trace-format.md)
\* and a mutation can change what survives.
AcceptorRestart(a) ==
    /\ aState' = [i \in Ins |-> [aState[i] EXCEPT ![a] = Restarted(aState[i][a])]]
    /\ UNCHANGED <<rmState, regRM, regState, msgs, collVars>>

(* Collection (acceptor/core.py collect, answer_from_record).             *)

\* RM r applied the outcome durably (its commit or abort returned) and says
\* so; the coordinator that hears it counts it (participant.py Applied ->
\* Acknowledge; coordinator owner tally; RecordOutcome's acked set).
RMAck(r) ==
    /\ CollectionEnabled
    /\ rmState[r] \in {"committed", "aborted"}
    /\ r \notin acked
    /\ acked' = acked \cup {r}
    /\ UNCHANGED <<rmState, regRM, regState, aState, msgs, coll>>

\* Acceptor a collects the transaction: its instance state goes and a
\* compact record of the outcome stays. Only once the outcome is decided
\* and recorded, and every RM of the set acknowledged.
Collect(a) ==
    /\ CollectionEnabled
    /\ coll[a] = "live"
    /\ AllAcknowledged
    /\ \E o \in Decided :
         coll' = [coll EXCEPT ![a] = o]
    /\ UNCHANGED <<rmState, regRM, regState, aState, msgs, acked>>

\* A late or duplicated 1a or 2a (a ballot-0 vote among them) reaches an
\* acceptor that collected: it answers with the recorded outcome, and its
\* state does not change (no promise, no accept: nothing a recovery could
\* decide differently from).
AnswerFromRecord(a) ==
    /\ coll[a] \in {"commit", "abort"}
    /\ \E m \in msgs : m.type \in {"phase1a", "phase2a"}
    /\ Send([type |-> "outcome", out |-> coll[a]])
    /\ UNCHANGED <<rmState, regRM, regState, aState, collVars>>

\* The record's retention ends: the acceptor keeps nothing of the
\* transaction and takes no step for it any more.
Expire(a) ==
    /\ coll[a] \in {"commit", "abort"}
    /\ coll' = [coll EXCEPT ![a] = "gone"]
    /\ UNCHANGED <<rmState, regRM, regState, aState, msgs, acked>>

-----------------------------------------------------------------------------
PCNext ==
    \/ \E r \in RM : \/ Join(r) \/ Exclude(r)
                     \/ RMPrepare(r) \/ RMChooseToAbort(r)
                     \/ RMRcvCommitMsg(r) \/ RMRcvAbortMsg(r) \/ RMAck(r)
    \/ Close \/ ApplicationAbort
    \/ \E l \in Leader : \E b \in LeaderBallots(l) : Phase1a(l, b) \/ Phase2a(l, b)
    \/ Decide
    \/ \E a \in Acceptor : Phase1b(a) \/ Phase2b(a) \/ AcceptorRestart(a)
                           \/ Collect(a) \/ AnswerFromRecord(a) \/ Expire(a)

\* Safety only: no fairness, so any process may stop forever (a crash).
Spec == PCInit /\ [][PCNext]_vars

-----------------------------------------------------------------------------
(* Properties.                                                             *)

\* Atomicity: no RM committed while another aborted.
TCConsistent ==
    \A r1, r2 \in RM : ~(rmState[r1] = "aborted" /\ rmState[r2] = "committed")

\* Paxos safety, per instance: at most one value is ever chosen.
OneValuePerInstance == \A i \in Ins : Cardinality(ChosenValues(i)) <= 1

\* A decided outcome never changes: never two different outcomes.
DecisionStable == Cardinality(Decided) <= 1

\* The same as an action property.
DecisionNeverChanges == [][Decided # {} => Decided' = Decided]_vars

\* Pitfall 7 needs this of collection: a prepared RM, which must learn the
\* outcome and never guess, can still find it at the acceptors, in a record
\* or in the instance states of a majority. (Acknowledgements give it: no
\* acceptor collects while an RM of the set has not applied the outcome.)
OutcomeLearnable ==
    \A r \in RM : rmState[r] = "prepared" =>
        \/ \E a \in Acceptor : coll[a] \in {"commit", "abort"}
        \/ IsMajority({a \in Acceptor : coll[a] = "live"})

\* A collected acceptor's record holds the decided outcome.
RecordsAgree == \A a \in Acceptor : coll[a] \in {"commit", "abort"} => coll[a] \in Decided

-----------------------------------------------------------------------------
(* Refinement of TCommit.                                                  *)
(* A joined RM is itself. An excluded RM has no work in the transaction:   *)
(* it can commit or abort vacuously, like a prepared RM, so it maps to     *)
(* "prepared" (its Exclude step is TCommit's Prepare). An RM still unknown *)
(* maps to "working": Close needs every RM joined or excluded, and the     *)
(* registrar can choose a set only after Close, so no RM commits while     *)
(* another is unknown.                                                     *)

tcState == [r \in RM |-> IF regRM[r] = "excluded" THEN "prepared" ELSE rmState[r]]

TC == INSTANCE TCommit WITH rmState <- tcState

TCRefinement == TC!TCSpec

THEOREM Spec => [](TypeOK /\ TCConsistent /\ OneValuePerInstance /\ DecisionStable
                   /\ OutcomeLearnable /\ RecordsAgree)
THEOREM Refinement == Spec => TC!TCSpec
=============================================================================
