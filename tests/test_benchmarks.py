import json
import subprocess
import sys

from conftest import ROOT, environment


def test_benchmark_script_runs_quick(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--hd", "--repeats", "1",
                           "--json", str(out)], env=environment(tmp_path), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    names = {(r["name"], r["variant"], r["batch"]) for r in rows}
    assert {("unet_256", v, b) for v in ("eager", "channels_last", "bf16", "bn_folded") for b in (1, 8)} <= names
    assert {("pix2pix_train_step", "eager", 1), ("hd_global_512x1024", "channels_last", 1), ("hd_local_1024x2048", "eager", 1),
            ("hd_global_train_step", "eager", 1)} <= names
    assert all(r["ms"] > 0 and r["peak_mb"] > 100 for r in rows)
    assert "| hd_local_1024x2048 | eager | 1 |" in done.stdout
