// help.ts - the text of `jdls -h`: the guide's usage lines and every option
// with its meaning and default, marking jdls extensions and the options
// that arrive with the distributed listener.
import { DEFAULT_TIDY_MINUTES } from './args.js';
import { C } from '../native.js';

export function helpText(): string {
  return `jdls - jBASE-style Distributed Lock Service: shared-memory lock table and its monitor

Usage:
  jdls -i {-bPTA} {-snn,mm} {-tnn}   create the lock table and start the lock monitor
  jdls -k {-A}                       stop the lock monitor
  jdls -K {-o}                       remove the lock table
  jdls -d{v}{L} {--json}             display the lock table
  jdls -h                            this help

Options:
  -i        Initialise the shared memory lock table and start the lock monitor.
            (In jBASE -i also starts the distributed listener; it arrives with a
            later release, so -i starts the lock monitor only.)
  -b        Run in the background (normal mode of operation). jdls returns once
            the monitor is ready; it logs to $JBCRELEASEDIR/jdls-monitor.log.
            Without -b the monitor runs in the foreground, logs to stderr and
            runs until SIGTERM or SIGINT.
  -A        Arbiter (lock monitor) only, do not start/stop the distributed
            listener. Same as without -A until the listener exists.
  -P        Port based locks: a lock belongs to (host, port), so two processes
            on one port share their locks. Default: process/thread id based.
  -T        Time stamp all shared memory locks (shown by -dvL).
  -snn,mm   Lock table size: nn record locks in groups of mm locks (-s nn,mm
            also works). The group count is rounded up to the next prime:
            -s13000,50 gives 13150 locks in 263 groups. Default
            ${C.DEFAULT_LOCKS},${C.DEFAULT_PER_GROUP}. Ignored, with a warning, if the table exists already.
  -tnn      Tidy-up period in minutes: free the locks of processes that no
            longer exist. Default ${DEFAULT_TIDY_MINUTES}. jdls extension: decimals are accepted
            (-t0.5 is 30 seconds).
  -k        Kill the shared memory lock monitor (waits up to 5 s for it to
            exit). Locks and the table are left as they are.
  -K        Remove the lock table (the shared memory). Refused while any
            process has it attached or holds locks in it; those processes
            are named.
  -o        With -K: force. Stop a running monitor, then remove the table even
            if processes are attached.
  -d        Display the lock monitor and listener state and the lock summary.
  -v        With -d: verbose (start and run times, tidy-up figures, locking
            mechanism, memory).
  -L        List the record locks outstanding (implies -d).
  --json    jdls extension: print the display as one JSON document (alone it
            means -dvL --json; queued lock requests are included).
  -h        This help (also --help).

Arriving with the distributed listener (a later release; now an error):
  -D        Distributed listener only (-ibD, -kD).
  -C        Client connection test.

Environment:
  JBCRELEASEDIR   the installation; its lock table is /dev/shm/jdls-<uid>-<hash>.
                  Unset: $HOME/.jdls (or /tmp/jdls-<uid> without HOME).
  JDLS_LOG_LEVEL  the monitor's log level (fatal..trace; default info).

Exit codes: 0 success; 1 the command failed (no table, monitor already
running, table in use, ...); 2 usage error (nothing was started or created).

Examples:
  jdls -ibs13000,50    start in the background with 13150 locks in 263 groups
  jdls -dvL            show the monitor state and every record lock
  jdls -k              stop the monitor
  jdls -K              remove the table
`;
}
