---------------------------- MODULE PaxosCommit ----------------------------
(***************************************************************************)
(* Paxos Commit with a registrar, as paxos-commit implements it.           *)
(*                                                                         *)
(* Gray & Lamport, "Consensus on Transaction Commit", TODS 2006: sections  *)
(* 4 (Paxos Commit), 5 (F = 0 is two-phase commit) and 6.2 (registration). *)
(* The paper's appendix and the PaxosCommit module of tlaplus/Examples are *)
(* the references; this module follows our code instead where they differ: *)
(*                                                                         *)
(*  - Ballots are <<round, leader>> pairs ordered lexicographically        *)
(*    (rm_sdk/protocol.py Ballot). Round 0 with leader 0 is the instance   *)
(*    owner's ballot (an RM's vote, the registrar's set); leader ballots   *)
(*    have round >= 1 and a leader incarnation id >= 1. So ballots are     *)
(*    partitioned among leaders, and a restarted leader, which takes a     *)
(*    fresh id, never shares a ballot with its earlier incarnation.        *)
(*  - Besides one instance per RM there is the registrar's instance, whose *)
(*    values are participant sets and NoSet (the paper's bottom).          *)
(*  - Commit iff the registrar chose a set S and every RM in S chose       *)
(*    "prepared"; abort iff the registrar chose NoSet or some RM of S      *)
(*    chose "aborted" (rm_sdk/protocol.py decide).                         *)
(*                                                                         *)
(* Failures. Messages live in the set msgs, which only grows. Receiving    *)
(* never removes a message, so a message can be received any number of     *)
(* times (duplication), in any order (reordering), or never (loss). We do  *)
(* not add a LoseMessage action: for safety, a behaviour in which a        *)
(* message is dropped is matched step for step by one in which the message *)
(* stays in msgs and is simply never received, so removing messages would  *)
(* only add states, not behaviours that can break an invariant. Every      *)
(* process may also stop taking steps at any time (a crash) and take them  *)
(* again later (a restart):                                                *)
(*  - An acceptor's state is all durable (acceptor/storage.py writes it    *)
(*    before replying), so a restart loses only in-flight messages, that   *)
(*    is, messages never received. AcceptorRestart makes this explicit:    *)
(*    the state after a restart is Restarted(state before), the identity.  *)
(*  - Leaders keep only soft state. A leader that restarts comes back      *)
(*    under a new id, which the model has as a separate element of Leader.*)
(*  - The owner (registrar) keeps its registration in memory. If it dies   *)
(*    it stops; the RMs may then abort on their own while working, and     *)
(*    recovery leaders settle its instance. regState only records what it  *)
(*    has already sent.                                                    *)
(*  - An RM's "prepared" is durable before its vote leaves (pitfall 3). A  *)
(*    working RM that crashes loses its work: it behaves like an RM that   *)
(*    never votes, which the model already allows.                         *)
(*                                                                         *)
(* Three operators are the points where pitfalls would enter: Restarted,  *)
(* FreshBallot and CanAbortUnilaterally. The seeded mutations under        *)
(* mutations/ override one each from a TLC config (Def <- MutatedDef).     *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS
    RM,         \* the resource managers that may join the transaction
    Acceptor,   \* the 2F+1 acceptors
    Leader,     \* leader incarnation ids: integers >= 1, ordered like strings in Ballot
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

\* What a leader proposes in an instance in which no majority member
\* reported a value (coordinator/rules.py free_value, pitfall 4).
FreeValue(i) == IF i = Registrar THEN NoSet ELSE "aborted"

\* Majorities of acceptors. With one acceptor (F = 0) it is {{a}}.
IsMajority(Q) == 2 * Cardinality(Q) > Cardinality(Acceptor)
Majority == {Q \in SUBSET Acceptor : IsMajority(Q)}

-----------------------------------------------------------------------------
VARIABLES
    rmState,   \* rmState[r]: the RM's own state (rm_sdk/participant.py RMState)
    regRM,     \* regRM[r]: "unknown", "joined" or "excluded" (registrar soft state)
    regState,  \* "open", "closed" (ballot-0 set sent) or "aborted" (ballot-0 NoSet sent)
    aState,    \* aState[i][a]: acceptor a's durable [mbal, bal, val] of instance i
    msgs       \* every message ever sent

vars == <<rmState, regRM, regState, aState, msgs>>

Send(m) == msgs' = msgs \cup {m}

Message ==
         [type : {"phase1a"}, bal : LeaderBallot]
    \cup UNION {[type : {"phase1b"}, ins : {i}, acc : Acceptor, mbal : LeaderBallot,
                 bal : Ballot \cup {NoBallot}, val : {None} \cup Value(i)] : i \in Ins}
    \cup UNION {[type : {"phase2a"}, ins : {i}, bal : Ballot, val : Value(i)] : i \in Ins}
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

-----------------------------------------------------------------------------
(* What has been chosen, and the decision rule (protocol.py chosen/decide).*)

\* The 2b's of instance i: acceptor a accepted v at ballot b.
Votes(i) == {m \in msgs : m.type = "phase2b" /\ m.ins = i}

\* v is chosen in i if a majority accepted it at one ballot. Every 2b ever
\* sent stays in msgs, so this is the paper's "chosen", not a leader's view.
ChosenAt(i, b, v) ==
    IsMajority({m.acc : m \in {n \in Votes(i) : n.bal = b /\ n.val = v}})
ChosenValues(i) == {m.val : m \in {n \in Votes(i) : ChosenAt(i, n.bal, n.val)}}

\* Participant sets anyone may know: the owner's ballot-0 set, which every
\* acceptor report or leader proposal of a set repeats. A leader learns it
\* from acceptor reports (coordinator/rules.py Tally.known_set); knowing it
\* from the 2a is more knowledge, so more behaviours, than the code has.
SetsSeen == {m.val : m \in {n \in msgs : /\ n.type = "phase2a"
                                         /\ n.ins = Registrar
                                         /\ n.val # NoSet}}

CommitRule ==
    \E s \in ChosenValues(Registrar) :
        /\ s # NoSet
        /\ \A r \in s : "prepared" \in ChosenValues(r)

\* The registrar can only ever choose the owner's set or NoSet, and an
\* aborted member aborts either way: so an aborted vote of a member of a
\* known set decides before the registrar's instance has chosen.
AbortRule ==
    \/ NoSet \in ChosenValues(Registrar)
    \/ \E s \in SetsSeen : \E r \in s : "aborted" \in ChosenValues(r)

-----------------------------------------------------------------------------
(* Mutation points. Each is overridden in one mutations/ model.            *)

\* An acceptor's state of one instance after a crash and restart: all of
\* it is durable (pitfall 1).
Restarted(s) == s

\* Leader l has not yet sent a 2a for instance i at ballot b: it sends at
\* most one (pitfall 2; coordinator/rules.py BallotRun caches its proposals).
FreshBallot(l, b, i) ==
    ~\E m \in msgs : m.type = "phase2a" /\ m.ins = i /\ m.bal = b

\* An RM may abort on its own only before it prepared (pitfall 3).
CanAbortUnilaterally(r) == rmState[r] = "working"

-----------------------------------------------------------------------------
PCInit ==
    /\ rmState  = [r \in RM |-> "working"]
    /\ regRM    = [r \in RM |-> "unknown"]
    /\ regState = "open"
    /\ aState   = [i \in Ins |-> [a \in Acceptor |->
                       [mbal |-> Ballot0, bal |-> NoBallot, val |-> None]]]
    /\ msgs     = {}

(* Registration (paper section 6.2; coordinator/rules.py Registration).    *)

\* An RM joins while registration is open.
Join(r) ==
    /\ regState = "open"
    /\ regRM[r] = "unknown"
    /\ regRM' = [regRM EXCEPT ![r] = "joined"]
    /\ UNCHANGED <<rmState, regState, aState, msgs>>

\* The code's close is one atomic step that shuts out every RM that has not
\* joined. Here it is one Exclude step per absent RM, then Close; the code's
\* close is such a sequence with nothing in between, so every behaviour of
\* the code is one of this spec. Separate steps let the refinement mapping
\* below move one RM at a time.
Exclude(r) ==
    /\ regState = "open"
    /\ regRM[r] = "unknown"
    /\ regRM' = [regRM EXCEPT ![r] = "excluded"]
    /\ UNCHANGED <<rmState, regState, aState, msgs>>

\* The owner closes registration: its ballot-0 2a proposes the joined set,
\* and the RMs are told to prepare (coordinator/service.py _drive).
Close ==
    /\ regState = "open"
    /\ \A r \in RM : regRM[r] # "unknown"
    /\ regState' = "closed"
    /\ Send([type |-> "phase2a", ins |-> Registrar, bal |-> Ballot0,
             val |-> {r \in RM : regRM[r] = "joined"}])
    /\ UNCHANGED <<rmState, regRM, aState>>

\* The application (or the transaction timeout) aborts before commit: the
\* owner's ballot-0 2a proposes NoSet, and later joins fail.
ApplicationAbort ==
    /\ regState = "open"
    /\ regState' = "aborted"
    /\ Send([type |-> "phase2a", ins |-> Registrar, bal |-> Ballot0, val |-> NoSet])
    /\ UNCHANGED <<rmState, regRM, aState>>

(* Resource managers (rm_sdk/participant.py Participant).                  *)

\* Told to prepare (only after Close), the RM makes its work durable and
\* votes: phase2a at its own ballot 0.
RMPrepare(r) ==
    /\ regRM[r] = "joined"
    /\ regState = "closed"
    /\ rmState[r] = "working"
    /\ rmState' = [rmState EXCEPT ![r] = "prepared"]
    /\ Send([type |-> "phase2a", ins |-> r, bal |-> Ballot0, val |-> "prepared"])
    /\ UNCHANGED <<regRM, regState, aState>>

\* The RM aborts on its own (its prepare failed, or the owner is gone) and
\* says so at ballot 0.
RMChooseToAbort(r) ==
    /\ regRM[r] = "joined"
    /\ CanAbortUnilaterally(r)
    /\ rmState' = [rmState EXCEPT ![r] = "aborted"]
    /\ Send([type |-> "phase2a", ins |-> r, bal |-> Ballot0, val |-> "aborted"])
    /\ UNCHANGED <<regRM, regState, aState>>

RMRcvCommitMsg(r) ==
    /\ rmState[r] = "prepared"
    /\ [type |-> "outcome", out |-> "commit"] \in msgs
    /\ rmState' = [rmState EXCEPT ![r] = "committed"]
    /\ UNCHANGED <<regRM, regState, aState, msgs>>

RMRcvAbortMsg(r) ==
    /\ regRM[r] = "joined"
    /\ rmState[r] \in {"working", "prepared"}
    /\ [type |-> "outcome", out |-> "abort"] \in msgs
    /\ rmState' = [rmState EXCEPT ![r] = "aborted"]
    /\ UNCHANGED <<regRM, regState, aState, msgs>>

(* Leaders (coordinator/rules.py, coordinator/leader.py Leader.recover).   *)

\* Instances a leader can know of: the registrar's, and those of RMs that
\* joined (the set S, or an RM whose vote an acceptor reported). Others
\* never get a vote and never matter to the decision.
LiveIns == {Registrar} \cup {r \in RM : regRM[r] = "joined"}

\* Leader l starts ballot b. One 1a covers every instance; acceptors answer
\* per instance (the code's 1a names a set of instances: answering for one
\* a leader did not name only raises mbal, which is always allowed).
Phase1a(l, b) ==
    /\ b \in LeaderBallots(l)
    /\ Send([type |-> "phase1a", bal |-> b])
    /\ UNCHANGED <<rmState, regRM, regState, aState>>

\* Leader l proposes in instance i at ballot b, once a majority Q promised b:
\* the value of the highest ballot any of them accepted, or the free value.
\* Ties at the highest ballot are broken arbitrarily, as phase2a_value does
\* (they cannot disagree while FreshBallot holds).
Phase2a(l, b, i) ==
    /\ b \in LeaderBallots(l)
    /\ i \in LiveIns
    /\ FreshBallot(l, b, i)
    /\ \E Q \in Majority :
         LET q1b == {m \in msgs : /\ m.type = "phase1b" /\ m.ins = i
                                  /\ m.mbal = b /\ m.acc \in Q}
             acc == {m \in q1b : m.bal # NoBallot}
         IN  /\ \A a \in Q : \E m \in q1b : m.acc = a
             /\ \/ /\ acc = {}
                   /\ Send([type |-> "phase2a", ins |-> i, bal |-> b, val |-> FreeValue(i)])
                \/ \E m \in acc :
                     /\ \A n \in acc : BallotLE(n.bal, m.bal)
                     /\ Send([type |-> "phase2a", ins |-> i, bal |-> b, val |-> m.val])
    /\ UNCHANGED <<rmState, regRM, regState, aState>>

\* Any leader (the owner included) that sees the decision rule hold announces
\* the outcome to the RMs and records it at the acceptors (leader.py evaluate,
\* record_outcome). An outcome message in msgs stands for both.
Decide ==
    /\ \/ CommitRule /\ Send([type |-> "outcome", out |-> "commit"])
       \/ AbortRule  /\ Send([type |-> "outcome", out |-> "abort"])
    /\ UNCHANGED <<rmState, regRM, regState, aState>>

(* Acceptors (acceptor/rules.py).                                          *)

\* Promise a 1a's ballot if it is above mbal; 1a's at or below mbal are
\* ignored (the code's NACK carries no value, so it is not modelled).
Phase1b(a, i) ==
    /\ i \in LiveIns
    /\ \E m \in msgs :
         /\ m.type = "phase1a"
         /\ BallotLT(aState[i][a].mbal, m.bal)
         /\ aState' = [aState EXCEPT ![i][a].mbal = m.bal]
         /\ Send([type |-> "phase1b", ins |-> i, acc |-> a, mbal |-> m.bal,
                  bal |-> aState[i][a].bal, val |-> aState[i][a].val])
    /\ UNCHANGED <<rmState, regRM, regState>>

\* Accept a 2a unless a higher ballot was promised. At the ballot already
\* accepted, the same value again changes nothing (a duplicate) and a
\* different one is refused (phase2b's ConflictError): either way no step.
Phase2b(a) ==
    /\ \E m \in msgs :
         /\ m.type = "phase2a"
         /\ BallotLE(aState[m.ins][a].mbal, m.bal)
         /\ aState[m.ins][a].bal # m.bal
         /\ aState' = [aState EXCEPT ![m.ins][a] = [mbal |-> m.bal, bal |-> m.bal, val |-> m.val]]
         /\ Send([type |-> "phase2b", ins |-> m.ins, acc |-> a, bal |-> m.bal, val |-> m.val])
    /\ UNCHANGED <<rmState, regRM, regState>>

\* A crash and restart of acceptor a: what it sent stays sent, what was sent
\* to it may never arrive, and its state is what Restarted keeps.
AcceptorRestart(a) ==
    /\ aState' = [i \in Ins |-> [aState[i] EXCEPT ![a] = Restarted(aState[i][a])]]
    /\ UNCHANGED <<rmState, regRM, regState, msgs>>

-----------------------------------------------------------------------------
PCNext ==
    \/ \E r \in RM : \/ Join(r) \/ Exclude(r)
                     \/ RMPrepare(r) \/ RMChooseToAbort(r)
                     \/ RMRcvCommitMsg(r) \/ RMRcvAbortMsg(r)
    \/ Close \/ ApplicationAbort
    \/ \E l \in Leader : \/ \E b \in LeaderBallots(l) : Phase1a(l, b)
                         \/ \E b \in LeaderBallots(l), i \in Ins : Phase2a(l, b, i)
    \/ Decide
    \/ \E a \in Acceptor : \/ \E i \in Ins : Phase1b(a, i)
                           \/ Phase2b(a)
                           \/ AcceptorRestart(a)

\* Safety only: no fairness, so any process may stop forever (a crash).
Spec == PCInit /\ [][PCNext]_vars

-----------------------------------------------------------------------------
(* Properties.                                                             *)

\* Atomicity: no RM committed while another aborted.
TCConsistent ==
    \A r1, r2 \in RM : ~(rmState[r1] = "aborted" /\ rmState[r2] = "committed")

\* Paxos safety, per instance: at most one value is ever chosen.
OneValuePerInstance == \A i \in Ins : Cardinality(ChosenValues(i)) <= 1

\* The outcomes ever announced. msgs only grows, so this set is a history
\* variable: once an outcome is decided it stays in Decided, and a later
\* different decision would make the set larger than one.
Decided == {m.out : m \in {n \in msgs : n.type = "outcome"}}

\* A decided outcome never changes: no two different outcomes, ever.
DecisionStable == Cardinality(Decided) <= 1

\* The same as an action property (checked as a PROPERTY).
DecisionNeverChanges == [][Decided # {} => Decided' = Decided]_vars

-----------------------------------------------------------------------------
(* Refinement of TCommit.                                                  *)
(* A joined RM is itself. An excluded RM has no work in the transaction:  *)
(* it can commit or abort vacuously, like a prepared RM, so it maps to     *)
(* "prepared" (its Exclude step is TCommit's Prepare). An RM still unknown *)
(* is "working"; Close needs every RM joined or excluded, and the          *)
(* registrar can choose a set only after Close, so no RM commits while one *)
(* is unknown.                                                             *)

tcState == [r \in RM |-> IF regRM[r] = "excluded" THEN "prepared" ELSE rmState[r]]

TC == INSTANCE TCommit WITH rmState <- tcState

TCRefinement == TC!TCSpec

THEOREM Spec => [](TypeOK /\ TCConsistent /\ OneValuePerInstance /\ DecisionStable)
THEOREM Refinement == Spec => TC!TCSpec
=============================================================================
