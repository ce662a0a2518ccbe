#!/usr/bin/env python3
"""The readings and the table of one scale run (bench/cluster.sh). Standard library only.

  cluster.py snapshot NAME OUT PID...   append one reading of the machine and of these processes
                                        (CPU ticks, RSS) to OUT/snapshots.jsonl
  cluster.py ready OUT K                exit 0 when all K hold-*.jsonl files have their ready line
  cluster.py published OUT K N          exit 0 when all K hold files reported N publications
  cluster.py report OUT                 print the run's table (markdown), write OUT/summary.json
  cluster.py reference OUT DEST         copy the run to DEST for committing, each receipt list
                                        left out (hold-*.jsonl keep their summaries)

Memory per connection is the growth of each node's VmRSS between the "baseline" reading (nodes
up, no clients) and the "held" one (every socket open, SETTLE seconds later), over the sockets it
holds. The kernel's share is the growth of Slab, SUnreclaim (/proc/meminfo) and TCP memory pages
(/proc/net/sockstat) over the same readings, over the connections; both ends of each connection
are on this machine, so it is two sockets' worth. CPU per delivery is the nodes' CPU (utime +
stime, /proc/<pid>/stat) between "paced-start" and "paced-end" (one publication at a time, at a
rate that offers the same deliveries per second at every size), and between "burst-start" and
"burst-end" (posts back to back), over the deliveries of each.
"""

import glob
import json
import math
import os
import statistics
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
# The slab caches an open TCP socket's objects live in (its sock, its sockfs inode, file and
# dentry, its epoll item): what /proc/slabinfo can attribute to sockets, while Slab is the
# whole machine's and moves with everything else that runs (builds create dentries too).
SOCKET_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        fields = stat[stat.rindex(")") + 2:].split()
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status")
                   if line.startswith("VmRSS:"))
        return {"utime": int(fields[11]), "stime": int(fields[12]), "rss_kib": rss}
    except (OSError, StopIteration, ValueError):
        return None


def machine():
    mem = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        mem[k] = int(v.split()[0])
    tcp = {}
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            parts = line.split()[1:]
            tcp = {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    caches = {}
    try:
        for line in open("/proc/slabinfo"):
            f = line.split()
            if f and f[0] in SOCKET_CACHES:
                caches[f[0]] = int(f[1]) * int(f[3])  # active objects x object size
    except OSError:
        pass  # Readable by root only: the figure is then left out.
    conntrack = None
    try:
        conntrack = int(open("/proc/sys/net/netfilter/nf_conntrack_count").read())
    except OSError:
        pass
    return {"slab_kib": mem.get("Slab"), "sunreclaim_kib": mem.get("SUnreclaim"),
            "mem_available_kib": mem.get("MemAvailable"), "tcp_mem_pages": tcp.get("mem"),
            "tcp_inuse": tcp.get("inuse"), "conntrack": conntrack, "slab_caches": caches,
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def snapshot(name, out, pids):
    row = {"name": name, "wall": time.time(), "machine": machine(),
           "procs": {p: proc(p) for p in pids}}
    with open(f"{out}/snapshots.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def holds(out):
    """Each hold process's lines, by node index."""
    result = {}
    for path in sorted(glob.glob(f"{out}/hold-*.jsonl")):
        i = int(path.rsplit("-", 1)[1].split(".")[0])
        lines = []
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass  # A line still being written.
        result[i] = lines
    return result


def count(out, k, event):
    h = holds(out)
    return [sum(1 for l in h.get(i, []) if l.get("event") == event) for i in range(k)]


def pct(sorted_vals, q):
    """Nearest-rank quantile of sorted values, as the load tool computes it."""
    if not sorted_vals:
        return 0
    rank = max(1, min(len(sorted_vals), math.ceil(q * len(sorted_vals))))
    return sorted_vals[rank - 1]


def report(out):
    cfg = json.load(open(f"{out}/config.json"))
    snaps = {}
    for line in open(f"{out}/snapshots.jsonl"):
        r = json.loads(line)
        snaps[r["name"]] = r
    h = holds(out)
    k = cfg["nodes"]
    nodes = [str(p) for p in cfg["node_pids"]]
    redis = str(cfg["redis_pid"])
    ready = {i: next(l for l in h[i] if l["event"] == "ready") for i in range(k)}
    done = {i: next((l for l in h[i] if l["event"] == "done"), None) for i in range(k)}
    pubs = {}
    for i in range(k):
        for l in h[i]:
            if l["event"] == "publication":
                pubs.setdefault(l["seq"], {})[i] = l
    opened = [ready[i]["opened"] for i in range(k)]
    total = sum(opened)
    wanted = cfg["per_node"] * k

    # Memory.
    base, held = snaps["baseline"], snaps["held"]
    rss_per = [(held["procs"][n]["rss_kib"] - base["procs"][n]["rss_kib"]) * 1024 / max(o, 1)
               for n, o in zip(nodes, opened)]
    rss_sum = sum((held["procs"][n]["rss_kib"] - base["procs"][n]["rss_kib"]) * 1024 for n in nodes)
    mb, mh = base["machine"], held["machine"]
    # The kernel's memory is the machine's: other jobs open and close sockets too (another
    # benchmark's 10 000 in this network namespace, once). So the growth is divided by the TCP
    # sockets it came with (/proc/net/sockstat `inuse`), times the two a connection has here.
    sockets = mh["tcp_inuse"] - mb["tcp_inuse"]
    per = (lambda v: v * 2 / sockets) if sockets > 0 else (lambda v: v / total)
    kern = {
        "slab": per((mh["slab_kib"] - mb["slab_kib"]) * 1024),
        "sunreclaim": per((mh["sunreclaim_kib"] - mb["sunreclaim_kib"]) * 1024),
        "tcp_mem": per((mh["tcp_mem_pages"] - mb["tcp_mem_pages"]) * PAGE),
        "tcp_sockets_added": sockets,
        "other_sockets": sockets - 2 * total,
    }
    cb, ch = mb.get("slab_caches") or {}, mh.get("slab_caches") or {}
    if cb and ch:
        by_cache = {c: per(ch.get(c, 0) - cb.get(c, 0)) for c in SOCKET_CACHES}
        kern["socket_caches"] = sum(by_cache.values())
        kern["socket_caches_by_cache"] = by_cache
    loads = [str(p) for p in cfg["hold_pids"]]
    load_rss = sum((held["procs"][p] or {}).get("rss_kib", 0) for p in loads) * 1024 / total

    # Handshakes.
    start = min(ready[i]["connect_start_ns"] for i in range(k))
    end = max(ready[i]["connect_end_ns"] for i in range(k))
    cluster_hs = total / ((end - start) / 1e9)
    node_hs = [ready[i]["handshakes_per_sec"] for i in range(k)]

    # The single publications: full fan-out time and receipts over every socket.
    singles = []
    for seq in cfg["single_seqs"]:
        per = pubs.get(seq, {})
        delays = sorted(d for l in per.values() for d in l["delays_ns"])
        local = per.get(0, {}).get("last_ns")
        remote = [l["last_ns"] for i, l in per.items() if i != 0]
        singles.append({"seq": seq, "received": len(delays), "expected": total,
                        "last_ms": delays[-1] / 1e6 if delays else None,
                        "p50_ms": pct(delays, 0.5) / 1e6, "p99_ms": pct(delays, 0.99) / 1e6,
                        "first_ms": delays[0] / 1e6 if delays else None,
                        "posted_node_last_ms": local / 1e6 if local is not None else None,
                        "other_nodes_last_ms": max(remote) / 1e6 if remote else None})

    total_cpu = lambda a, b, pids: sum(
        (b["procs"][p]["utime"] + b["procs"][p]["stime"] - a["procs"][p]["utime"] - a["procs"][p]["stime"])
        for p in pids if a["procs"].get(p) and b["procs"].get(p)) / TICK

    def window(first, last, seqs):
        """CPU per delivery of the publications `seqs`, between two readings."""
        a, b = snaps[first], snaps[last]
        cpu = lambda key: sum(b["procs"][n][key] - a["procs"][n][key] for n in nodes) / TICK
        got = sum(len(pubs.get(q, {}).get(i, {}).get("delays_ns", [])) for q in seqs for i in range(k))
        user, system = cpu("utime"), cpu("stime")
        secs = b["wall"] - a["wall"]
        per = lambda v: v * 1e6 / max(got, 1)
        return {"publications": len(seqs), "deliveries": got, "secs": secs,
                "node_cpu_secs": user + system, "cpu_us_per_delivery": per(user + system),
                "user_us_per_delivery": per(user), "kernel_us_per_delivery": per(system),
                "redis_cpu_per_sec": total_cpu(a, b, [redis]) / max(secs, 1e-9),
                "load_tool_us_per_delivery": per(total_cpu(a, b, loads))}

    burst = window("burst-start", "burst-end", cfg["burst_seqs"])
    paced = window("paced-start", "paced-end", cfg["paced_seqs"])
    paced["posts_per_sec"] = cfg["paced_posts_per_sec"]
    ramped = snaps["ramped"]
    ramp_node_cpu = total_cpu(base, ramped, nodes)
    # The load processes started after the baseline reading: their whole CPU time at "ramped".
    ramp_load_cpu = sum((ramped["procs"][p] or {}).get("utime", 0) + (ramped["procs"][p] or {}).get("stime", 0)
                        for p in loads) / TICK
    idle_secs = max(held["wall"] - ramped["wall"], 1e-9)
    redis_idle = total_cpu(ramped, held, [redis]) / idle_secs
    idle_cpu = total_cpu(ramped, held, nodes) / idle_secs

    delivered = sum(len(l["delays_ns"]) for per in pubs.values() for l in per.values())
    publications = len(cfg["single_seqs"]) + len(cfg["paced_seqs"]) + len(cfg["burst_seqs"])
    expected = total * publications
    summary = {
        "label": cfg["label"], "nodes": k, "per_node": cfg["per_node"], "connections": total,
        "wanted": wanted, "failed": sum(ready[i]["failed"] for i in range(k)),
        "rss_bytes_per_connection": rss_sum / total, "rss_bytes_per_connection_by_node": rss_per,
        "kernel_bytes_per_connection": kern, "load_tool_rss_bytes_per_connection": load_rss,
        "handshakes_per_sec": cluster_hs, "handshakes_per_sec_by_node": node_hs,
        "ramp_secs": (end - start) / 1e9, "singles": singles,
        "paced": paced, "burst": burst,
        "redis_idle_cpu_per_sec": redis_idle,
        "server_us_per_handshake": ramp_node_cpu * 1e6 / total,
        "load_tool_us_per_handshake": ramp_load_cpu * 1e6 / total,
        "idle_cpu_per_sec": idle_cpu,
        "publications": publications, "expected": expected, "delivered": delivered,
        "lost": expected - delivered,
        "closed_early": sum((done[i] or {}).get("closed", 0) for i in range(k)),
        "unexpected": sum((done[i] or {}).get("unexpected", 0) for i in range(k)),
        "conntrack": {"baseline": mb["conntrack"], "held": mh["conntrack"]},
        "tcp_inuse_held": mh["tcp_inuse"],
        "loadavg": {n: snaps[n]["machine"]["loadavg"] for n in ("baseline", "held", "burst-end")},
    }
    json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
    print(table(summary))
    return summary


def table(s):
    k, total = s["nodes"], s["connections"]
    kern = s["kernel_bytes_per_connection"]
    sing = [x for x in s["singles"] if x["last_ms"] is not None]
    med = lambda key: statistics.median(x[key] for x in sing) if sing else float("nan")
    mx = lambda key: max(x[key] for x in sing) if sing else float("nan")
    b, p = s["burst"], s["paced"]
    lines = [
        f"Scale run {s['label']}: {k} node(s) x {s['per_node']:,} sockets = {total:,} connections "
        f"open ({s['failed']} failed), load average {' / '.join(s['loadavg']['held'])} when held.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| connections held (every one open: {total == s['wanted']}) | {total:,} |",
        f"| server RSS per connection, bytes (all nodes: RSS growth / connections) | "
        f"{s['rss_bytes_per_connection']:,.0f} |",
        f"| per node | {', '.join(f'{v:,.0f}' for v in s['rss_bytes_per_connection_by_node'])} |",
        f"| TCP sockets opened (sockstat inuse; 2 per connection, others' in brackets) | "
        f"{kern['tcp_sockets_added']:,} ({kern['other_sockets']:+,}) |",
        f"| kernel per connection, bytes (both ends; growth / sockets opened x 2): Slab / of it SUnreclaim / TCP mem pages | "
        f"{kern['slab']:,.0f} / {kern['sunreclaim']:,.0f} / {kern['tcp_mem']:,.0f} |",
        (f"| of the kernel's, in the socket slab caches (/proc/slabinfo: "
         f"{', '.join(f'{c} {v:,.0f}' for c, v in kern['socket_caches_by_cache'].items())}), bytes | "
         f"{kern['socket_caches']:,.0f} |" if "socket_caches" in kern else
         "| of the kernel's, in the socket slab caches | n/a (/proc/slabinfo not readable) |"),
        f"| load tool RSS per client socket, bytes | {s['load_tool_rss_bytes_per_connection']:,.0f} |",
        f"| handshakes per second, whole cluster (connect + upgrade, {s['ramp_secs']:.1f} s ramp) | "
        f"{s['handshakes_per_sec']:,.0f} |",
        f"| per node (each its own load process) | "
        f"{', '.join(f'{v:,.0f}' for v in s['handshakes_per_sec_by_node'])} |",
        f"| full fan-out, post to last receipt, ms (median / max of {len(sing)}) | "
        f"{med('last_ms'):.1f} / {mx('last_ms'):.1f} |",
        f"| receipts p50, ms (median / max) | {med('p50_ms'):.1f} / {mx('p50_ms'):.1f} |",
        f"| receipts p99, ms (median / max) | {med('p99_ms'):.1f} / {mx('p99_ms'):.1f} |",
        f"| last receipt on the node posted to / on the others, ms (medians) | "
        f"{med('posted_node_last_ms'):.1f} / "
        + (f"{statistics.median(x['other_nodes_last_ms'] for x in sing):.1f} |"
           if k > 1 and sing else "- |"),
        f"| server CPU per handshake / load tools' CPU per handshake, us | "
        f"{s['server_us_per_handshake']:.1f} / {s['load_tool_us_per_handshake']:.1f} |",
        f"| server CPU per delivery, paced, us ({p['publications']} posts at {p['posts_per_sec']:.3g}/s, "
        f"{p['deliveries']:,} deliveries in {p['secs']:.1f} s) | {p['cpu_us_per_delivery']:.3f} |",
        f"| of it user / kernel, us | {p['user_us_per_delivery']:.3f} / {p['kernel_us_per_delivery']:.3f} |",
        f"| server CPU per delivery, burst, us ({b['publications']} posts back to back, "
        f"{b['deliveries']:,} deliveries in {b['secs']:.1f} s) | {b['cpu_us_per_delivery']:.3f} |",
        f"| of it user / kernel, us | {b['user_us_per_delivery']:.3f} / {b['kernel_us_per_delivery']:.3f} |",
        f"| load tools' CPU per delivery (receiving, same cores), paced / burst, us | "
        f"{p['load_tool_us_per_delivery']:.3f} / {b['load_tool_us_per_delivery']:.3f} |",
        f"| Redis CPU paced / burst / idle, CPU-ms per s | {p['redis_cpu_per_sec'] * 1e3:.1f} / "
        f"{b['redis_cpu_per_sec'] * 1e3:.1f} / {s['redis_idle_cpu_per_sec'] * 1e3:.1f} |",
        f"| nodes' CPU while idle (heartbeats), CPU-s per s | {s['idle_cpu_per_sec']:.3f} |",
        f"| deliveries == connections x publications ({s['publications']}) | "
        f"{s['delivered']:,} of {s['expected']:,}: **{s['lost']} lost** |",
        f"| sockets closed early / unexpected frames | {s['closed_early']} / {s['unexpected']} |",
        f"| conntrack entries (nf_conntrack_count) before / held | "
        f"{s['conntrack']['baseline']} / {s['conntrack']['held']} |",
        "",
        "Single publications (post to node 0): "
        + "; ".join(f"#{x['seq']} {x['received']:,}/{x['expected']:,} in {x['last_ms']:.1f} ms"
                    for x in sing),
    ]
    return "\n".join(lines)


def reference(out, dest):
    os.makedirs(dest, exist_ok=True)
    for name in ("context.txt", "table.md", "summary.json", "config.json", "snapshots.jsonl",
                 "posts.jsonl"):
        if os.path.exists(f"{out}/{name}"):
            with open(f"{out}/{name}") as src, open(f"{dest}/{name}", "w") as dst:
                dst.write(src.read())
    for i, lines in holds(out).items():
        with open(f"{dest}/hold-{i}.jsonl", "w") as f:
            for l in lines:
                l.pop("delays_ns", None)
                f.write(json.dumps(l) + "\n")


def main():
    cmd = sys.argv[1]
    if cmd == "snapshot":
        snapshot(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "ready":
        sys.exit(0 if min(count(sys.argv[2], int(sys.argv[3]), "ready")) >= 1 else 1)
    elif cmd == "published":
        got = count(sys.argv[2], int(sys.argv[3]), "publication")
        sys.exit(0 if min(got) >= int(sys.argv[4]) else 1)
    elif cmd == "reference":
        reference(sys.argv[2], sys.argv[3])
    elif cmd == "report":
        s = report(sys.argv[2])
        sys.exit(0 if s["lost"] == 0 and s["failed"] == 0 else 2)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
