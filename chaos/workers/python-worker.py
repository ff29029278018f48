#!/usr/bin/env python3
"""python-worker.py - the chaos suite's python3 workload under the preload
shim: an unmodified interpreter whose fcntl.lockf / os.lockf calls (libc
fcntl and lockf, which the shim interposes) lock bytes of a record-lock file.

  python3 chaos/workers/python-worker.py '<json {id, runDir, host, seed, dataFile, nkeys, maxOps?, keyPrefix?}>'

The same keys, history format and store protocol as jdls-chaosshim
(chaos/fixtures/chaos-shim.c): byte k of dataFile is "fcntl:HOT<k>" (k < 3)
or "fcntl:COLD<k-3>"; one JSON line per event, one os.write on an O_APPEND
descriptor, t = time.monotonic_ns() (CLOCK_MONOTONIC, as every history);
`R`/`W` lines on <runDir>/store.sock. Start path: shim-direct without JDLS,
shim-remote with it. Tokens: "0" (fcntl hands none back).

Ops (seeded; python's own random, so not the C program's sequence):
fcntl.lockf LOCK_EX (wait) 40 %, LOCK_EX|LOCK_NB (nowait: locked) 25 %,
LOCK_SH (read, store R token 0) 20 %, os.lockf F_LOCK 15 %; each write op
is a read-modify-write of the store value, then release. No exit-holding
and no POSIX edges here (the C program has them): this worker shows that a
second unmodified runtime, with its own libc call paths, is excluded too.
SIGUSR2: stop (SIGSTOP) after the next write op's read. SIGTERM: finish the
op, log exit, exit 0. Exit 3: the history or the store failed.
"""
import errno
import fcntl
import json
import os
import random
import signal
import socket
import sys
import time

spec = json.loads(sys.argv[1])
cid = spec["id"]
os.makedirs(os.path.join(spec["runDir"], "hist"), exist_ok=True)
hist = os.open(os.path.join(spec["runDir"], "hist", cid + ".jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
rng = random.Random(spec["seed"])
nkeys = int(spec["nkeys"])
max_ops = spec.get("maxOps") or None  # 0 / absent: until SIGTERM
state = {"term": False, "pause": False}
signal.signal(signal.SIGTERM, lambda *_: state.__setitem__("term", True))
signal.signal(signal.SIGUSR2, lambda *_: state.__setitem__("pause", True))


def log(op, ev, **kw):
    e = {"t": str(time.monotonic_ns()), "c": cid, "op": op, "ev": ev}
    e.update(kw)
    line = (json.dumps(e, separators=(",", ":")) + "\n").encode()
    # one write(2) per line: whole lines survive a kill -9
    if os.write(hist, line) != len(line):
        sys.exit(3)


store = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
store.connect(os.path.join(spec["runDir"], "store.sock"))
sfile = store.makefile("rwb", buffering=0)


def ask(line):
    store.sendall((line + "\n").encode())
    ans = sfile.readline().decode().strip()
    if not ans:
        sys.stderr.write("python-worker %s: the store closed\n" % cid)
        sys.exit(3)
    return ans


PREFIX = spec.get("keyPrefix", "")  # a chaos round's, e.g. "r3." -> "fcntl:r3.HOT0"


def key_name(k):
    return "fcntl:%sHOT%d" % (PREFIX, k) if k < 3 else "fcntl:%sCOLD%d" % (PREFIX, k - 3)


def retry(f):
    # a handler that ran (SIGUSR2, SIGTERM) may end a wait with EINTR
    # (python retries EINTR itself since PEP 475 unless the handler raised)
    while True:
        try:
            return f()
        except InterruptedError:
            continue


fd = os.open(spec["dataFile"], os.O_RDWR | os.O_CREAT, 0o666)
log(0, "start", path="shim-remote" if os.environ.get("JDLS") else "shim-direct", host=spec["host"], pid=os.getpid())
op = 0
while not state["term"] and (max_ops is None or op < max_ops):
    op += 1
    k = rng.randrange(min(nkeys, 3)) if nkeys <= 3 or rng.random() < 0.7 else 3 + rng.randrange(nkeys - 3)
    key = key_name(k)
    r = rng.random()
    kind = "wait" if r < 0.40 else "nowait" if r < 0.65 else "read" if r < 0.85 else "oslockf"
    mode = "read" if kind == "read" else "write"
    log(op, "invoke", key=key, mode=mode, wait="nowait" if kind == "nowait" else "wait")
    try:
        if kind == "oslockf":
            os.lseek(fd, k, os.SEEK_SET)
            retry(lambda: os.lockf(fd, os.F_LOCK, 1))
        else:
            flags = fcntl.LOCK_SH if kind == "read" else fcntl.LOCK_EX
            if kind == "nowait":
                flags |= fcntl.LOCK_NB
            retry(lambda: fcntl.lockf(fd, flags, 1, k, os.SEEK_SET))
    except (BlockingIOError, PermissionError):
        log(op, "locked", key=key)
        continue
    except OSError as e:
        log(op, "deadlock" if e.errno == errno.EDEADLK else "error", key=key, err="%s %s" % (e.errno, e.strerror))
        continue
    log(op, "grant", key=key, mode=mode, token="0")
    ans = ask("R %s %s 0" % (cid, key))
    if ans.startswith("V "):
        v = int(ans[2:])
        log(op, "read", key=key, token="0", value=v)
        if mode == "write":
            if state["pause"]:
                state["pause"] = False
                os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(rng.randrange(4) / 1000)
            w = ask("W %s %s 0 %d" % (cid, key, v + 1))
            log(op, "write" if w == "OK" else "refused", key=key, token="0", value=v + 1)
        else:
            time.sleep(rng.randrange(4) / 1000)
    else:
        log(op, "refused", key=key, token="0")
    log(op, "release", key=key)
    if kind == "oslockf":
        os.lseek(fd, k, os.SEEK_SET)
        os.lockf(fd, os.F_ULOCK, 1)
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, k, os.SEEK_SET)
    log(op, "released", key=key)
log(0, "exit", holding=[])
sys.exit(0)
