"""Read `perf report --sort tid,sym --stdio` on stdin; print each thread's share of all samples
and of the samples in decoding (serde_json, the strict JSON reader, the protocols' decode
functions)."""
import re
import sys
from collections import defaultdict

DECODE = re.compile(r"serde_json|codec::|decode|Decode|strict")
total = defaultdict(float)
decoding = defaultdict(float)
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+(\d+):(\S+)\s+\[.\]\s+(.*)", line)
    if not m:
        continue
    share, tid, comm, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
    key = f"{comm}:{tid}"
    total[key] += share
    if DECODE.search(sym):
        decoding[key] += share
all_decoding = sum(decoding.values()) or 1.0
print(f"{'thread':<34} {'of all samples':>15} {'of decoding':>12}")
for key in sorted(total, key=lambda k: -total[k]):
    if total[key] < 0.5:
        continue
    print(f"{key:<34} {total[key]:>14.1f}% {100 * decoding[key] / all_decoding:>11.1f}%")
