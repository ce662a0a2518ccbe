"""Read `perf script` output (samples with call stacks) on stdin and print where decoding ran:
its share of all samples, split by thread (which worker) and by task (the hub task, or the
connections' reader tasks). A sample is decoding when its stack is inside serde_json or a
protocol's decode functions; its task is the hub task when the stack passes through the hub
task's loop (`hub_task::HubTask` now, `driver::run` before the runtime crate), a reader when it
passes through the connection's read loop."""
import re
import sys
from collections import Counter

DECODE = re.compile(
    r"serde_json::de::|serde_json::value::de|serde_json::read::|switchboard_protocol::codec::value"
    r"|::decode\b|::decode_|Decode>::decode"
)
HUB = re.compile(r"hub_task::HubTask|switchboard_tokio::driver::run|driver::apply")
READER = re.compile(r"switchboard_runtime::reader::|switchboard_tokio::connection::read|HubHandle::text")

samples = 0
decoding = 0
by_thread = Counter()
all_by_thread = Counter()
by_task = Counter()
for block in sys.stdin.read().split("\n\n"):
    lines = [l for l in block.splitlines() if l.strip()]
    if not lines:
        continue
    head = lines[0].split()
    if len(head) < 2:
        continue
    thread = f"{head[0]}:{head[1]}"
    stack = "\n".join(lines[1:])
    samples += 1
    all_by_thread[thread] += 1
    if not DECODE.search(stack):
        continue
    decoding += 1
    by_thread[thread] += 1
    task = "hub task" if HUB.search(stack) else "reader tasks" if READER.search(stack) else "other"
    by_task[task] += 1

if samples == 0:
    sys.exit("no samples")
print(f"samples: {samples}; decoding: {decoding} ({100 * decoding / samples:.1f}% of all)")
print(f"{'thread':<28} {'of all samples':>15} {'of decoding':>12}")
for thread, n in all_by_thread.most_common():
    if n * 200 < samples:
        continue
    share = 100 * by_thread[thread] / (decoding or 1)
    print(f"{thread:<28} {100 * n / samples:>14.1f}% {share:>11.1f}%")
print("decoding by task: " + ", ".join(
    f"{task} {100 * n / (decoding or 1):.1f}%" for task, n in by_task.most_common()))
