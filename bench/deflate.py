"""What permessage-deflate would save on switchboard's frames, and what it would cost.

Every server-to-client JSON example of docs/protocol/*-v1.md, compressed as RFC 7692 would
(raw deflate, sync flush, the 4-byte tail dropped): with a fresh context per message (no
context takeover) and with one context for the whole sequence (context takeover), plus the time
to compress one frame and zlib's own state size. Run: python3 bench/deflate.py (from the
repository root). The figures are in docs/compression.md.
"""
import re, zlib, glob, json, sys, time, tracemalloc
frames={}
for path in sorted(glob.glob('docs/protocol/*-v1.md')):
    sysname=path.split('/')[-1].split('-v1')[0]
    text=open(path).read()
    out=[]
    for head,b in re.findall(r"```json([^\n]*)\n(.*?)```", text, re.S):
        if 'server-to-client' not in head: continue
        for c in [b]+b.splitlines():
            try: v=json.loads(c)
            except Exception: continue
            if isinstance(v,dict): out.append(json.dumps(v,separators=(',',':')).encode())
    frames[sysname]=list(dict.fromkeys(out))
def d(data, co): return co.compress(data)+co.flush(zlib.Z_SYNC_FLUSH)
print("| system | server-to-client examples | mean bytes | deflated, no context takeover | deflated, context takeover |")
print("| --- | --- | --- | --- | --- |")
allf=[];R=N=C=0
for s,fs in frames.items():
    raw=sum(map(len,fs)); nc=sum(len(d(f,zlib.compressobj(6,zlib.DEFLATED,-15,8)))-4 for f in fs)
    co=zlib.compressobj(6,zlib.DEFLATED,-15,8); ctx=sum(len(d(f,co))-4 for f in fs)
    print(f"| {s} | {len(fs)} | {raw/len(fs):.0f} | {nc/raw:.2f} | {ctx/raw:.2f} |")
    allf+=fs; R+=raw; N+=nc; C+=ctx
print(f"| all | {len(allf)} | {R/len(allf):.0f} | {N/R:.2f} | {C/R:.2f} |")
n=0;t=time.perf_counter()
for _ in range(300):
    for f in allf: d(f,zlib.compressobj(6,zlib.DEFLATED,-15,8)); n+=1
fresh=(time.perf_counter()-t)/n
co=zlib.compressobj(6,zlib.DEFLATED,-15,8); n=0; t=time.perf_counter()
for _ in range(300):
    for f in allf: d(f,co); n+=1
ctx=(time.perf_counter()-t)/n
print(f"compress one frame: {fresh*1e6:.1f} us with a fresh context, {ctx*1e6:.1f} us with context takeover")
print("zlib state (zlib.h formula): deflate window 15/memLevel 8 =", (1<<17)+(1<<17), "B; inflate window 15 =", (1<<15)+7*1024, "B")
