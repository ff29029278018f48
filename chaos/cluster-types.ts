// cluster-types.ts - what the nemesis and the adversaries may do to a
// running chaos cluster (implemented by cluster.ts). Kept apart so that fault
// code compiles against the interface, not the implementation.
import type { ChildProcess } from 'node:child_process';
import type { FaultRecord } from './faults.js';

/** The configurations the suite runs (one service layout each). */
export type ConfigName =
  /** `jdls -ib`: the shm table, monitor + listener */
  | 'table'
  /** `jdls -ibP`: the table with port-based owners */
  | 'port'
  /** `jdls -ibD`: listener only, OS file locks */
  | 'oslock'
  /** two `jdls -ib` services, resilient clients (SERVER2) */
  | 'pair'
  /** the pair with an etcd witness (issue 15): both services name it, resilient clients */
  | 'wpair';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ServerHandle {
  name: 'primary' | 'secondary';
  /** network namespace of the server host */
  ns: string;
  /** its JBCRELEASEDIR */
  dir: string;
  /** environment for jdls and direct clients of this installation */
  env: NodeJS.ProcessEnv;
  /** the listener's TCP port */
  port: number;
  /** the arguments that start the whole service (`-ib`, `-ibP`, `-ibD`) */
  startArgs: string[];
  /** whether it has a shm table (not for -ibD) */
  hasTable: boolean;
  /** run `jdls <args>` inside the server's namespace, bounded (30 s) */
  jdls(args: string[]): Promise<RunResult>;
  monitorPid(): number | undefined;
  listenerPid(): number | undefined;
  lockServerPids(): number[];
  /** false once the nemesis killed it for good (pair: the guide's clients never reconnect to a failed server) */
  up: boolean;
}

export interface ClientHandle {
  id: string;
  /** lib-direct, lib-remote, lib-pair, lib-oslocks, shim-direct, shim-remote, sqlite, ... */
  path: string;
  /** the host (namespace) it runs on */
  host: string;
  pid: number;
  /** reaches its locks through a lock server (pause/cut can make the server drop it) */
  remote: boolean;
  /** presents fencing tokens to the store (a paused holder's late write is then refused) */
  fenced: boolean;
  /** the servers it talks to */
  servers: ('primary' | 'secondary')[];
  alive(): boolean;
  /** when it was started (Date.now() ms) */
  startedAt?: number;
  /** ask the client to stop itself (SIGSTOP) right after its next grant's read, so the hold is paused for sure */
  pauseNextHold?(): void;
}

export interface ChaosCluster {
  readonly runDir: string;
  readonly config: ConfigName;
  readonly servers: ServerHandle[];
  /** client host namespaces */
  readonly clientHosts: string[];
  /** the address a client host reaches a server at */
  serverAddr(server: 'primary' | 'secondary', clientHost: string): string;
  clients(): ClientHandle[];
  /** take a link between a client host and a server host down or up (the client end; silence, no RST) */
  setLink(clientHost: string, server: 'primary' | 'secondary', up: boolean): void;
  /** start a process inside a namespace (null: the root namespace); killed at the end of the run */
  spawnIn(ns: string | null, label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess;
  /** append a fault to faults.jsonl */
  recordFault(f: FaultRecord): void;
  /** CLOCK_MONOTONIC ns */
  now(): bigint;
  /** stop when true (the run's deadline passed) */
  stopping(): boolean;
}
