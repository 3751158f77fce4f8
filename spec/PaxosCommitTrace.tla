------------------------- MODULE PaxosCommitTrace --------------------------
(***************************************************************************)
(* Trace validation: is a log of a real run a behaviour of PaxosCommit?    *)
(*                                                                         *)
(* After Cirstea, Kuppe, Loillier and Merz, "Validating Traces of          *)
(* Distributed Programs Against TLA+ Specifications" (2024), for plain     *)
(* TLC 2.15. paxos_commit/tracecheck.py merges the NDJSON event logs of    *)
(* every process by Lamport clock, keeps one transaction, and writes its   *)
(* events as the sequence Trace (docs/trace-format.md). Each event pins    *)
(* the parameters of the spec action it names, and what that action sent; *)
(* the counter l says how many events have been matched. The trace is a    *)
(* behaviour of the spec iff a state with l = Len(Trace) + 1 is reachable: *)
(* TLC reports that as a violation of TraceNotDone (exit 12 = accepted).   *)
(* Otherwise the largest l ever printed is the last matched event.         *)
(***************************************************************************)
EXTENDS PaxosCommit, Sequences, TLC

CONSTANT Trace

VARIABLE l

traceVars == <<vars, l>>

\* New messages of a step.
Sent == msgs' \ msgs

MatchEvent(e) ==
    CASE e.event = "Join"             -> Join(e.rm)
      [] e.event = "Exclude"          -> Exclude(e.rm)
      [] e.event = "Close"            -> /\ Close
                                         /\ {r \in RM : regRM[r] = "joined"} = e.set
      [] e.event = "ApplicationAbort" -> ApplicationAbort
      [] e.event = "RMPrepare"        -> RMPrepare(e.rm)
      [] e.event = "RMChooseToAbort"  -> RMChooseToAbort(e.rm)
      [] e.event = "RMRcvCommitMsg"   -> RMRcvCommitMsg(e.rm)
      [] e.event = "RMRcvAbortMsg"    -> RMRcvAbortMsg(e.rm)
      [] e.event = "Phase1a"          -> /\ Phase1a(e.leader, e.bal)
                                         /\ Sent = {[type |-> "phase1a", bal |-> e.bal, ins |-> e.ins]}
      [] e.event = "Phase2a"          -> /\ Phase2a(e.leader, e.bal)
                                         /\ Sent = {[type |-> "phase2a", bal |-> e.bal, prop |-> e.prop]}
      [] e.event = "Phase1b"          -> /\ Phase1b(e.acc)
                                         /\ Sent = {[type |-> "phase1b", ins |-> p.ins, acc |-> e.acc,
                                                     mbal |-> e.bal, bal |-> p.bal, val |-> p.val]
                                                    : p \in e.promised}
      [] e.event = "Phase2b"          -> /\ Phase2b(e.acc)
                                         /\ Sent = {[type |-> "phase2b", ins |-> p.ins, acc |-> e.acc,
                                                     bal |-> e.bal, val |-> p.val]
                                                    : p \in e.accepted}
      [] e.event = "Decide"           -> /\ Decide
                                         /\ [type |-> "outcome", out |-> e.out] \in msgs'
      [] e.event = "AcceptorRestart"  -> AcceptorRestart(e.acc)
      [] e.event = "RMAck"            -> RMAck(e.rm)
      [] e.event = "Collect"          -> /\ Collect(e.acc)
                                         /\ coll'[e.acc] = e.out
      [] e.event = "AnswerFromRecord" -> /\ AnswerFromRecord(e.acc)
                                         /\ coll[e.acc] = e.out
      [] e.event = "Expire"           -> Expire(e.acc)
      [] OTHER                        -> FALSE

TraceInit == PCInit /\ l = 1

TraceNext ==
    /\ l <= Len(Trace)
    /\ MatchEvent(Trace[l])
    /\ l' = l + 1
    \* Register 1 holds the longest prefix matched so far; print each new one.
    /\ IF l' > TLCGet(1) THEN TLCSet(1, l') /\ PrintT(<<"matched", l>>) ELSE TRUE

TraceSpec == TraceInit /\ [][TraceNext]_traceVars

\* Violated exactly when the whole trace was matched.
TraceNotDone == l <= Len(Trace)

ASSUME TLCSet(1, 0)
=============================================================================
