// fault-injection.ts - deliberate server faults, for the chaos suite's
// "the checker has teeth" tests only (docs/reliability.md): a checker that
// never sees a violation proves nothing, so the tests run the real service
// with one safety mechanism switched off and require the checker to notice.
//
// The switch is an environment variable of the service's processes, not a
// jdls.yaml setting: nothing an operator configures can reach it, and a
// service started with it logs an error at start and on every use, so it
// cannot run unnoticed.
//
//   JDLS_FAULT_INJECTION=keep-locks-on-disconnect
//     a lock server does NOT release a closed connection's locks (the
//     guide's promise "a client's locks are released the moment its
//     connection fails" broken on purpose).
export const FAULT_ENV = 'JDLS_FAULT_INJECTION';

export type ServerFault = 'keep-locks-on-disconnect';
const KNOWN: readonly ServerFault[] = ['keep-locks-on-disconnect'];

/** The faults switched on in this process's environment (unknown words are ignored: they inject nothing). */
export function serverFaults(env: NodeJS.ProcessEnv = process.env): ReadonlySet<ServerFault> {
  const words = (env[FAULT_ENV] ?? '').split(',').map((w) => w.trim());
  return new Set(KNOWN.filter((k) => words.includes(k)));
}
