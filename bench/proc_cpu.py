#!/usr/bin/env python3
"""CPU accounting for bench/run.sh, from /proc (Linux only).

  proc_cpu.py snap PID            a snapshot of PID's CPU and its descendants', as JSON
  proc_cpu.py diff A.json B.json REQUESTS
                                  prints "OWN_US DESC_US ACTIVE LIVE": per request, the CPU of
                                  PID itself (utime+stime, all threads) and of its descendants
                                  (live ones, and those PID reaped: its cutime+cstime), in
                                  microseconds; ACTIVE = direct children (nimbus: instances)
                                  that used CPU between the snapshots; LIVE = children alive at B
  proc_cpu.py pids PID            the PIDs of all live descendants of PID, one a line
"""
import json
import os
import sys

TCK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces or parens: split after the last ')'. rest[N - 3] is field N.
    rest = raw[raw.rindex(")") + 2:].split()
    return {
        "ppid": int(rest[1]),
        "self": int(rest[11]) + int(rest[12]),  # utime + stime
        "reaped": int(rest[13]) + int(rest[14]),  # cutime + cstime
        "start": int(rest[19]),  # starttime, to tell a reused PID apart
    }


def table():
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(name)
            if s:
                procs[int(name)] = s
    children = {}
    for pid, s in procs.items():
        children.setdefault(s["ppid"], []).append(pid)
    return procs, children


def subtree(procs, children, pid):
    """Every live descendant of pid (not pid itself)."""
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def snap(root):
    procs, children = table()
    if root not in procs:
        return {"alive": False}
    r = procs[root]
    kids = {}
    for c in children.get(root, []):
        ticks = sum(procs[p]["self"] + procs[p]["reaped"] for p in [c] + subtree(procs, children, c))
        kids[f"{c}:{procs[c]['start']}"] = ticks
    return {
        "alive": True,
        "own": r["self"],
        "desc": r["reaped"] + sum(kids.values()),
        "children": kids,
    }


def main(argv):
    if len(argv) == 3 and argv[1] == "snap":
        print(json.dumps(snap(int(argv[2]))))
    elif len(argv) == 3 and argv[1] == "pids":
        procs, children = table()
        for p in subtree(procs, children, int(argv[2])):
            print(p)
    elif len(argv) == 5 and argv[1] == "diff":
        a, b = (json.load(open(f)) for f in argv[2:4])
        reqs = int(argv[4] or 0)
        if not (a["alive"] and b["alive"]) or reqs <= 0:
            print("n/a n/a 0 0")
            return 0
        us = lambda ticks: f"{ticks / TCK * 1e6 / reqs:.1f}"
        active = sum(1 for k, t in b["children"].items() if t > a["children"].get(k, 0))
        print(us(b["own"] - a["own"]), us(b["desc"] - a["desc"]), active, len(b["children"]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
