// help.ts - the text of `jdls -h`: the guide's usage lines and every option
// with its meaning and default, marking jdls extensions.
import { DEFAULT_TIDY_MINUTES } from './args.js';
import { C } from '../native.js';
import { DEFAULTS, CONFIG_FILE } from '../server/config.js';

export function helpText(): string {
  return `jdls - jBASE-style Distributed Lock Service: shared-memory lock table, its
monitor, and the distributed lock listener

Usage:
  jdls -i {-bPTAD} {-snn,mm} {-tnn} {--port N} {--bind ADDR}
                                     create the lock table, start the lock monitor
                                     and the distributed listener
  jdls -k {-AD}                      stop the lock monitor and/or the listener
  jdls -K {-o}                       remove the lock table
  jdls -d{v}{L} {--json}             display the lock table
  jdls --sessions {--json}           list the lock servers' client sessions
  jdls --drop-session PID/CONN       close one client session (its locks are
  jdls --drop-session --port N {--addr A}  released; the lock server and its
                                     other clients stay)
  jdls -Cteststring                  test this client's JDLS configuration
  jdls --shim-path                   print the path of the preload shim:
                                     LD_PRELOAD=$(jdls --shim-path) program
  jdls --broker                      run the broker that preloaded processes with
                                     JDLS set reach (the shim starts it on first
                                     use; see docs/broker.md)
  jdls -h                            this help

  jDLS is the same command (the guide's name), and an option typed with the
  guide's en dash (jDLS –ibs13000,50, as copied from the document) works as
  with -.

Options:
  -i        Initialise the shared memory lock table, start the lock monitor and
            the distributed lock listener (two processes).
  -b        Run in the background (normal mode of operation). jdls returns once
            the monitor and the listener are ready; they log to
            $JBCRELEASEDIR/jdls-monitor.log and jdls-listener.log. Without -b
            the monitor runs in the foreground with the listener as its child,
            both log to stderr, until SIGTERM or SIGINT.
  -A        Arbiter (lock monitor) only, do not start/stop the distributed
            listener.
  -D        Distributed listener only, do not start/stop the lock monitor.
            -ibD without a running monitor means OS file locks; -kD stops the
            listener only: connected clients keep locking through their lock
            server processes, new connections are refused until it restarts.
  --port N  The listener's TCP port (default ${DEFAULTS.port}; 0 = any free port).
  --bind A  The address the listener binds (default ${DEFAULTS.bind}; :: for all
            IPv6 and IPv4 interfaces). Both can also be set, with the other
            listener settings, in $JBCRELEASEDIR/${CONFIG_FILE}; the command
            line wins.
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
  -k        Kill the lock listener and the shared memory lock monitor (waits up
            to 5 s for each to exit). Locks, the table and the lock server
            processes of connected clients are left as they are.
  -K        Remove the lock table (the shared memory). Refused while any
            process has it attached or holds locks in it; those processes
            are named.
  -o        With -K: force. Stop a running monitor, then remove the table even
            if processes are attached.
  -d        Display the lock monitor and listener state and the lock summary.
  -v        With -d: verbose (start and run times, tidy-up figures, locking
            mechanism, memory).
  -L        List the record locks outstanding (implies -d), the OS locks taken
            for OSLOCKS requests, and, while the listener runs, the client
            sessions: lock-server pid/connection, client address, jBASE port
            and pid, connected since, locks held, waiting for (root or the
            installation's owner only).
  --json    jdls extension: print the display as one JSON document (alone it
            means -dvL --json; queued lock requests are included).
  -C        Client connection test: -Cteststring connects to each server the
            JDLS environment variable names, sends the test string and checks
            the echo (exit 0), or prints why locks would not be enabled
            (exit 1; 2 if JDLS is malformed).
  --sessions
            jdls extension: the client sessions alone (as -dvL shows them).
  --drop-session PID/CONN | --drop-session --port N {--addr A}
            jdls extension: close that one client session; its locks are
            released as on any disconnect. Root or the installation's owner.
  -h        This help (also --help).

Stuck locks: release-item-locks -p PORT | -f FILE {-k KEY} (see
release-item-locks -h, docs/operations.md ("Stuck locks and client sessions")).

Environment:
  JDLS            client configuration (SERVER=host{,port}, SERVER2=..., WAIT,
                  TIMEOUT=s, BINARY, OSLOCKS, LOCK=..., VERBOSE, TRACE=file)
  JBCRELEASEDIR   the installation; its lock table is /dev/shm/jdls-<uid>-<hash>.
                  Unset: $HOME/.jdls (or /tmp/jdls-<uid> without HOME).
  JDLS_LOG_LEVEL  the log level of the monitor, listener and lock servers
                  (fatal..trace; default info).

Exit codes: 0 success; 1 the command failed (no table, monitor already
running, table in use, ...); 2 usage error (nothing was started or created).

Examples:
  jdls -ibs13000,50    start in the background with 13150 locks in 263 groups
  jdls -ib --port 50010 --bind 10.44.1.56
  jdls -dvL            show the monitor and listener state and every record lock
  jdls -kD             stop the listener only (restart it with jdls -ibD)
  jdls -k              stop the listener and the monitor
  jdls -K              remove the table
`;
}
