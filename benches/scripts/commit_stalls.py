#!/usr/bin/env python3
"""Polls the leader's commit index on its /metrics every 20 ms for a while
and prints the stretches in which it stood still for at least a threshold:
the stalls a client sees as its slowest requests.

    commit_stalls.py HTTP_PORTS SECONDS [THRESHOLD_SECONDS]

HTTP_PORTS is a comma-separated list of the members' HTTP ports on
127.0.0.1; the leader is found once, at the start.
"""
import re
import sys
import time
import urllib.request


def read(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    commit = re.search(r"^rafter_kv_commit_index(?:_total)? (\d+)", text, re.M)
    leader = re.search(r"^rafter_kv_is_leader (\d+)", text, re.M)
    return int(commit.group(1)), bool(leader and leader.group(1) == "1")


def main():
    ports = sys.argv[1].split(",")
    seconds = float(sys.argv[2])
    threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    leader = next(p for p in ports if read(p)[1])
    end = time.time() + seconds
    last, since, stalls = None, time.time(), []
    while time.time() < end:
        commit, _ = read(leader)
        now = time.time()
        if commit != last:
            if last is not None and now - since >= threshold:
                stalls.append(f"{now - since:.3f} s at {commit}")
            last, since = commit, now
        time.sleep(0.02)
    print(f"commit stalls of the leader ({leader}) of {threshold} s and more: "
          + (", ".join(stalls) if stalls else "none"))


if __name__ == "__main__":
    main()
