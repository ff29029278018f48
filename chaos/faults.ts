// faults.ts - the record of one injected fault (faults.jsonl in the run
// directory), written by the nemesis and read by the checker and the report.
//
// `affects` says whose locks the fault may legitimately take away: a paused
// or cut-off remote client's lock server drops it after the keep-alive
// bound; a killed lock server or listener frees its clients' locks. The
// checker trusts a client's logged hold only until the first fault that
// affects it begins (after that, only the store's fencing can protect the
// data, and the checker judges that part from the store's log).
export interface FaultRecord {
  /** e.g. 'kill-client', 'pause-client', 'cut-link', 'kill-lockserver', 'restart-listener' */
  kind: string;
  /** what it hit, for people: "client libr-2.1 (pid 4242)", "link c1<->primary" */
  target: string;
  /** CLOCK_MONOTONIC ns when it began */
  start: string;
  /** when it was healed (undefined: nothing to heal, e.g. a kill) */
  end?: string;
  /** client ids (HistoryEvent.c) whose locks it may take away; 'remote' = every client of a lock server; 'all' = every client */
  affects: string[] | 'remote' | 'all';
  /** measured after healing: ms from the fault's end (or start) to the next grant on an affected key, when known */
  recoveryMs?: number;
  note?: string;
}

export const FAULT_LOG = 'faults.jsonl';
