#!/usr/bin/env python3
"""The cost-growth table and plot (bench/growth.sh). Standard library only; the SVG is written
by hand. Usage: growth.py [--svg PATH] POINT_DIR...

Each POINT_DIR is one bench/cluster.sh run (its summary.json). The table lists, per point, the
nodes' CPU per delivery (paced and back to back; user and kernel apart), the nodes' RSS growth
per connection, the kernel's per connection (both ends of each connection: the growth of the
socket slab caches, and of Slab, which other jobs on the machine move too), the full
fan-out time of one publication, and the ratio of each to the first point (same run). The plot
has two panels over the number of connections (log scale): CPU per delivery, and memory per
connection. CPU per delivery is paced (one publication at a time, the same deliveries per second
offered at every point), with posts back to back beside it.
"""

import json
import math
import sys


def load(dirs):
    points = []
    for d in dirs:
        s = json.load(open(f"{d}/summary.json"))
        sing = sorted(x["last_ms"] for x in s["singles"] if x["last_ms"] is not None)
        points.append({
            "label": s["label"], "nodes": s["nodes"], "per_node": s["per_node"],
            "connections": s["connections"], "cpu": s["paced"]["cpu_us_per_delivery"],
            "user": s["paced"]["user_us_per_delivery"], "kernel": s["paced"]["kernel_us_per_delivery"],
            "burst": s["burst"]["cpu_us_per_delivery"], "paced_posts": s["paced"]["publications"],
            "paced_rate": s["paced"]["posts_per_sec"], "paced_deliveries": s["paced"]["deliveries"],
            "rss": s["rss_bytes_per_connection"], "slab": s["kernel_bytes_per_connection"]["slab"],
            "sockets": s["kernel_bytes_per_connection"].get("socket_caches", float("nan")),
            "fanout_ms": sing[len(sing) // 2] if sing else None, "hs": s["handshakes_per_sec"],
            "lost": s["lost"], "load": s["loadavg"]["held"][0],
            "deliveries": s["burst"]["deliveries"], "posts": s["burst"]["publications"],
        })
    return points


def table(points):
    first = points[0]
    ratio = lambda p, k: p[k] / first[k] if first[k] else float("nan")
    out = [
        "| point | connections | server CPU-us per delivery, paced (user + kernel) | vs first | "
        "back to back | server RSS per connection, bytes | vs first | kernel per connection, socket "
        "slab caches (Slab), bytes, both ends | full fan-out, ms (median) | handshakes/s | lost | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        where = "1 node" if p["nodes"] == 1 else f"{p['nodes']} nodes x {p['per_node']:,}"
        fan = f"{p['fanout_ms']:.1f}" if p["fanout_ms"] is not None else "n/a"
        socks = "n/a" if math.isnan(p["sockets"]) else f"{p['sockets']:,.0f}"
        out.append(
            f"| {where} | {p['connections']:,} | {p['cpu']:.3f} ({p['user']:.3f} + {p['kernel']:.3f}) | "
            f"{ratio(p, 'cpu'):.2f} | {p['burst']:.3f} | {p['rss']:,.0f} | {ratio(p, 'rss'):.2f} | {socks} ({p['slab']:,.0f}) | "
            f"{fan} | {p['hs']:,.0f} | {p['lost']} | {p['load']} |")
    out.append("")
    out.append("Paced: one publication at a time, 40 000 deliveries a second offered at every point ("
               + "; ".join(f"{p['label']}: {p['paced_posts']} posts at {p['paced_rate']:.3g}/s, "
                           f"{p['paced_deliveries']:,} deliveries" for p in points) + "). Back to back: "
               + "; ".join(f"{p['label']}: {p['posts']} posts, {p['deliveries']:,} deliveries"
                           for p in points) + ".")
    return "\n".join(out)


def axis(v):
    """A round axis maximum at or above v, and its tick step (at most six steps)."""
    if v <= 0:
        return 1.0, 0.25
    e = 10 ** math.floor(math.log10(v / 6))
    for m in (1, 2, 2.5, 5, 10, 20):
        step = m * e
        if math.ceil(v / step) <= 6:
            return math.ceil(v / step) * step, step
    return 6 * 20 * e, 20 * e


def svg(points, path):
    W, H = 960, 470
    panels = [
        ("Server CPU per delivery (us)", [("paced: total", "cpu", "#1f77b4"),
                                          ("paced: user space", "user", "#2ca02c"),
                                          ("paced: kernel", "kernel", "#d62728"),
                                          ("back to back: total", "burst", "#9467bd")]),
        ("Memory per connection (bytes)", [("server RSS (user space)", "rss", "#1f77b4"),
                                           ("kernel socket slabs (2 ends)", "sockets", "#ff7f0e")]),
    ]
    xs = [p["connections"] for p in points]
    lo, hi = min(xs) / 1.6, max(xs) * 1.6
    singles = ", ".join(f"{p['connections']:,}" for p in points if p["nodes"] == 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">Cost growth: '
             f'one node at {singles} connections, and the cluster</text>']
    for n, (title, series) in enumerate(panels):
        x0, y0, pw, ph = 70 + n * 480, 50, 370, 300
        ymax, step = axis(max((p[k] for p in points for _, k, _ in series if not math.isnan(p[k])),
                              default=1.0) * 1.1)
        X = lambda v: x0 + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * pw
        Y = lambda v: y0 + ph - v / ymax * ph
        parts.append(f'<text x="{x0 + pw / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
        for i in range(round(ymax / step) + 1):
            v = step * i
            parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
            label = f"{v:,.0f}" if v == int(v) else f"{v:,.2f}".rstrip("0")
            parts.append(f'<text x="{x0 - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{label}</text>')
        decade = 10 ** math.floor(math.log10(lo))
        while decade <= hi:
            for m in range(1, 10):
                v = decade * m
                if lo <= v <= hi:
                    major = m == 1
                    parts.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0 + ph}" '
                                 f'y2="{y0 + ph + (6 if major else 3)}" stroke="#333"/>')
                    if major:
                        parts.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0}" y2="{y0 + ph}" stroke="#eee"/>')
                        parts.append(f'<text x="{X(v):.1f}" y="{y0 + ph + 20}" text-anchor="middle">{v:,.0f}</text>')
            decade *= 10
        parts.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 40}" text-anchor="middle">'
                     f'connections (log scale)</text>')
        for j, (name, key, colour) in enumerate(series):
            # A figure the run could not take (the socket caches need root) is left out.
            shown = [p for p in points if not math.isnan(p[key])]
            pts = " ".join(f"{X(p['connections']):.1f},{Y(p[key]):.1f}" for p in shown)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for p in shown:
                px, py = X(p["connections"]), Y(p[key])
                if p["nodes"] > 1:
                    shape = f'<rect x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8" fill="{colour}"/>'
                else:
                    shape = f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"/>'
                parts.append(shape)
            # The legend sits under the panel, two entries a row, clear of the lines.
            lx, ly = x0 + (j % 2) * 190, y0 + ph + 62 + (j // 2) * 18
            parts.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
            parts.append(f'<text x="{lx + 26}" y="{ly}">{name}</text>')
        ly = y0 + ph + 62 + ((len(series) + 1) // 2) * 18
        parts.append(f'<circle cx="{x0 + 10}" cy="{ly - 4}" r="4" fill="#555"/>'
                     f'<text x="{x0 + 26}" y="{ly}">one node</text>')
        parts.append(f'<rect x="{x0 + 186}" y="{ly - 8}" width="8" height="8" fill="#555"/>'
                     f'<text x="{x0 + 216}" y="{ly}">cluster (all nodes together)</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--svg"]:
        out, args = args[1], args[2:]
    points = load(args)
    print(table(points))
    if out:
        svg(points, out)
        print(f"\nPlot: {out}")


if __name__ == "__main__":
    main()
