"""Load on the demo server: does a flood on one tab leave the other tabs alone (issue 38)?

    python benchmarks/load.py [--flood hd] [--calls 7] [--concurrency 24] [--burst-seconds 20] [--bursts 3]
                              [--quick] [--json load.json]

Launches the real app (`python app.py` on 127.0.0.1, offline: the shipped weights in pretrained/)
and calls it with gradio_client, each call with its tab's first example from spaces.yaml:
1. quiet latency: every tab called `--calls` times, one call at a time (after two warm-up calls
   each, which load the models and let the `auto` backend time its choices); the median per tab;
2. `--bursts` bursts: `--concurrency` client threads flood the `--flood` tab, each sending its next
   request as soon as its last is answered, for `--burst-seconds`, while the other tabs are called
   one after another (their latency under the flood). A flood request refused because the tab's
   queue is full ("busy") has its answer time recorded. After each burst has drained, the server's
   RSS (VmRSS of /proc/<pid>/status) is read;
3. a markdown table (per tab: quiet and under-flood median ms, their ratio), the busy answers, the
   RSS after each burst, and a summary line against the issue's targets: the other tabs within
   1.5x their quiet latency, busy answers in under 0.5 s, RSS after the last burst within 1.2x
   of after the first.
Times are wall-clock as the client sees them (uploads included), with client and server on the
same machine. The flood needs more concurrent requests than the tab admits (1 running + spaces.yaml's
`queue_size` waiting) to get busy answers. `--quick` (CI smoke run: checks the script, not the
machine) makes 2 quiet calls per tab and 3 s bursts.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"other_tabs_ratio": 1.5, "busy_s": 0.5, "rss_ratio": 1.2}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flood", default="hd", help="the tab to flood (a key of spaces.yaml's tabs; default hd)")
    p.add_argument("--calls", type=int, default=7, help="calls per tab for the quiet median (default 7)")
    p.add_argument("--concurrency", type=int, default=24,
                   help="concurrent flood requests (default 24: more than 1 running + queue_size 16 waiting)")
    p.add_argument("--burst-seconds", type=float, default=20, help="how long each burst floods the tab (default 20)")
    p.add_argument("--bursts", type=int, default=3, help="bursts, RSS read after each (default 3)")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 2 quiet calls per tab, 3 s bursts")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.burst_seconds = 2, 3
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` on a free loopback port, offline, its Gradio cache in `folder`; (process, URL)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "P2P_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(folder / "gradio_cache")}
    env.pop("GRADIO_SERVER_PORT", None)
    log = open(folder / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{(folder / 'app.log').read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/"
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the server did not open port {port} in 600 s")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def example_args(tab: str, spec: dict) -> tuple:
    """The tab's API arguments for its first example (seed 0, sampled)."""
    from gradio_client import handle_file

    example = spec["examples"][0]
    first, rest = (example[0], example[1:]) if isinstance(example, list) else (example, [])
    image = handle_file(str(ROOT / first))
    if tab == "colorization":
        return image, 0, False
    if tab == "maps":
        return image, rest[0], 0, False
    editor = {"background": image, "layers": [], "composite": None}
    if tab == "facades":
        return editor, 0, False
    model = ROOT / next(iter(spec["models"].values()))["local"] / "model_index.json"
    classes = len(json.loads(model.read_text())["id2label"])
    instances = handle_file(str(ROOT / rest[0])) if rest and rest[0] else None
    return editor, instances, 0, {}, *["random"] * classes


def timed(client, tab: str, args: tuple) -> tuple[float, str | None]:
    """(seconds, None) for an answer, (seconds, the error) for a refusal or failure."""
    start = time.perf_counter()
    try:
        client.predict(*args, api_name=f"/{tab}")
        return time.perf_counter() - start, None
    except Exception as e:
        return time.perf_counter() - start, str(e)


def burst(client, flood: str, others: list[str], inputs: dict, concurrency: int, seconds: float) -> dict:
    """Flood `flood` with `concurrency` requests at a time for `seconds` while calling `others` in turn."""
    deadline = time.perf_counter() + seconds
    served, busy, failed, other = [], [], [], {tab: [] for tab in others}
    lock = threading.Lock()

    def flooder():  # past the deadline too, until the burst has had an answer, however slow the machine
        while time.perf_counter() < deadline or not (served or busy or failed):
            s, error = timed(client, flood, inputs[flood])
            with lock:
                if error is None:
                    served.append(s)
                elif "is busy" in error:
                    busy.append(s)
                else:
                    failed.append(error)

    def caller():  # at least one round, however slow the machine
        while not all(other.values()) or time.perf_counter() < deadline:
            for tab in others:
                s, error = timed(client, tab, inputs[tab])
                if error is not None:
                    raise RuntimeError(f"/{tab} failed under the flood: {error}")
                other[tab].append(s)

    threads = [threading.Thread(target=flooder) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(min(1.0, seconds / 4))  # the flood fills the tab's queue first
    caller()
    for t in threads:
        t.join()
    return {"served": served, "busy": busy, "failed": failed, "other": other}


def median_ms(seconds: list[float]) -> float | None:
    return statistics.median(seconds) * 1000 if seconds else None


def main(argv=None) -> None:
    args = parse_args(argv)
    from gradio_client import Client

    tabs = yaml.safe_load((ROOT / "spaces.yaml").read_text())["tabs"]
    if args.flood not in tabs:
        raise SystemExit(f"--flood must be one of {list(tabs)}, got {args.flood!r}")
    others = [tab for tab in tabs if tab != args.flood]
    inputs = {tab: example_args(tab, spec) for tab, spec in tabs.items()}
    with tempfile.TemporaryDirectory() as folder:
        proc, url = start_server(Path(folder))
        try:
            client = Client(url, verbose=False, max_workers=args.concurrency + 8)
            quiet = {}
            for tab in tabs:
                for _ in range(2):  # warm-up: models loaded, `auto` backends chosen
                    _, error = timed(client, tab, inputs[tab])
                    if error is not None:
                        raise RuntimeError(f"/{tab} failed: {error}")
                quiet[tab] = median_ms([timed(client, tab, inputs[tab])[0] for _ in range(args.calls)])
            bursts, rss = [], []
            for _ in range(args.bursts):
                bursts.append(burst(client, args.flood, others, inputs, args.concurrency, args.burst_seconds))
                time.sleep(1)
                rss.append(rss_mb(proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    flooded = {tab: [s for b in bursts for s in b["other"][tab]] for tab in others}
    rows = {tab: {"quiet_ms": quiet[tab], "flood_ms": median_ms(flooded[tab]), "calls_under_flood": len(flooded[tab])}
            for tab in others}
    for row in rows.values():
        row["ratio"] = row["flood_ms"] / row["quiet_ms"] if row["flood_ms"] else None
    busy = [s for b in bursts for s in b["busy"]]
    served = [s for b in bursts for s in b["served"]]
    results = {
        "flood": args.flood, "concurrency": args.concurrency, "burst_seconds": args.burst_seconds,
        "calls": args.calls, "quick": args.quick, "cpu_count": os.cpu_count(),
        "tabs": rows, "flooded_tab": {"quiet_ms": quiet[args.flood], "served": len(served),
                                      "served_median_ms": median_ms(served)},
        "busy": {"count": len(busy), "median_s": statistics.median(busy) if busy else None,
                 "max_s": max(busy) if busy else None},
        "failed": [e for b in bursts for e in b["failed"]][:5],
        "rss_mb": rss, "rss_ratio": rss[-1] / rss[0] if rss else None, "targets": TARGETS,
    }
    worst = max((r["ratio"] for r in rows.values() if r["ratio"]), default=None)
    results["met"] = {"other_tabs_ratio": worst is not None and worst <= TARGETS["other_tabs_ratio"],
                      "busy_s": bool(busy) and max(busy) < TARGETS["busy_s"],
                      "rss_ratio": results["rss_ratio"] is not None and results["rss_ratio"] <= TARGETS["rss_ratio"]}

    print(f"\nflooding /{args.flood} with {args.concurrency} concurrent requests, {args.bursts} bursts of "
          f"{args.burst_seconds:g} s; {os.cpu_count()} CPUs{', QUICK' if args.quick else ''}\n")
    print("| tab | quiet ms | under flood ms | ratio | calls under flood |")
    print("|---|---:|---:|---:|---:|")
    for tab, r in rows.items():
        flood_ms = f"{r['flood_ms']:.0f}" if r["flood_ms"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"| {tab} | {r['quiet_ms']:.0f} | {flood_ms} | {ratio} | {r['calls_under_flood']} |")
    print(f"| {args.flood} (flooded) | {quiet[args.flood]:.0f} | "
          f"{results['flooded_tab']['served_median_ms'] or 0:.0f} (served) | | {len(served)} served |")
    b = results["busy"]
    print(f"\nbusy answers: {b['count']}" + (f", median {b['median_s']:.3f} s, max {b['max_s']:.3f} s" if busy else
                                            " (the flood never filled the queue: raise --concurrency)"))
    if results["failed"]:
        print(f"other flood failures: {results['failed']}")
    print("server RSS after each burst: " + ", ".join(f"{m:.0f} MB" for m in rss))

    def mark(ok):
        return "met" if ok else "NOT met"

    print(f"\nsummary: other tabs under the flood {worst or 0:.2f}x their quiet latency at worst (target <= "
          f"{TARGETS['other_tabs_ratio']}x: {mark(results['met']['other_tabs_ratio'])}); busy answers in "
          f"{b['max_s'] or 0:.3f} s at most (target < {TARGETS['busy_s']} s: {mark(results['met']['busy_s'])}); "
          f"RSS after burst {len(rss)} / after burst 1 = {results['rss_ratio'] or 0:.2f} (target <= "
          f"{TARGETS['rss_ratio']}: {mark(results['met']['rss_ratio'])})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
