import json
import subprocess
import sys

from conftest import ROOT, environment


def test_benchmark_script_runs_quick(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--hd", "--repeats", "1",
                           "--json", str(out)], env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["unet_b1", "unet_b4", "pipe_sampled", "pipe_det", "hd_global", "hd_local"]
    assert all(r["ms_per_image"] > 0 and r["peak_mb"] > 100 for r in rows)
    assert "| pix2pixHD G2 (global+local), 1024x2048" in done.stdout
