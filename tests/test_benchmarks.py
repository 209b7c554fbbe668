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


def test_training_rows_run_quick(tmp_path):
    out = tmp_path / "train.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--train", "--quick", "--hd", "--repeats",
                           "1", "--json", str(out)], env=environment(tmp_path), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["name"], r["variant"], r["batch"]): r for r in json.loads(out.read_text())["rows"]}
    for ngf in (32, 64):
        assert {(f"train_unet_256_ngf{ngf}", v, b) for v, b in (("reference", 1), ("ours", 1), ("ours", 4),
                                                                   ("ours", 8), ("bf16", 4))} <= rows.keys()
    assert {("train_hd_global_384x512", "ours", 1), ("facades_loader", "cached", 10)} <= rows.keys()
    assert all(r["per_second"] > 0 for r in rows.values())
    assert "- train_unet_256_ngf64: ours" in done.stdout and "x the reference's" in done.stdout


def test_backend_rows_run_quick(tmp_path):
    out = tmp_path / "backends.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--backends", "--quick", "--targets",
                           "facades_256,camvid_hd_384x512,label2city_g2_1024x2048", "--repeats", "1", "--json", str(out)],
                          env=environment(tmp_path), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["name"], r["variant"]): r for r in json.loads(out.read_text())["rows"]}
    for name in ("facades_256", "camvid_hd_384x512", "label2city_g2_1024x2048"):
        assert {(name, v) for v in ("reference", "onnxruntime", "torch", "fast", "bf16", "auto")} <= rows.keys()
        assert rows[name, "auto"]["chose"] in ("fast", "bf16", "onnxruntime")
    assert {("facades_256", v) for v in ("sampled_fast", "sampled_bf16", "sampled_auto")} <= rows.keys()
    assert rows["facades_256", "sampled_auto"]["chose"] in ("fast", "bf16", "onnxruntime")  # ORT samples too
    assert not any(n != "facades_256" and v.startswith("sampled") for n, v in rows), "pix2pixHD has no dropout"
    assert "- camvid_hd_384x512: auto (" in done.stdout and "x the speed of ONNX Runtime" in done.stdout
    together = {(r["name"], r["variant"]): r for r in json.loads(out.read_text())["interleaved"]}
    assert {("facades_256", v) for v in ("reference", "onnxruntime", "fast", "auto", "sampled_auto")} <= together.keys()
    assert ("camvid_hd_384x512", "auto") in together and ("camvid_hd_384x512", "sampled_auto") not in together
    assert all(r["ms"] > 0 for r in together.values()) and together["facades_256", "auto"]["chose"]
    assert "again in one process per target" in done.stdout


def test_load_benchmark_runs_quick(tmp_path):
    """benchmarks/load.py on a real server (shipped weights): the fields its summary is made of."""
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), "--quick", "--json", str(out)],
                          env=environment(tmp_path), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout)
    results = json.loads(out.read_text())
    assert results["flood"] == "hd" and results["quick"]
    assert set(results["tabs"]) == {"colorization", "maps", "facades"}
    for row in results["tabs"].values():
        assert row["quiet_ms"] > 0 and row["calls_under_flood"] > 0 and row["flood_ms"] > 0 and row["ratio"] > 0
    assert results["flooded_tab"]["served"] > 0 and not results["failed"]
    assert set(results["busy"]) == {"count", "median_s", "max_s", "probes_served"}
    assert results["busy"]["count"] + results["busy"]["probes_served"] > 0  # the newcomer's calls to the flooded tab
    assert results["flood_client_busy"]["count"] >= 0 and results["flood_nice"] == 0
    assert len(results["rss_mb"]) == 3 and all(m > 100 for m in results["rss_mb"]) and results["rss_ratio"] > 0
    assert set(results["met"]) == set(results["targets"]) == {"other_tabs_ratio", "busy_s", "rss_ratio"}
    assert "| colorization |" in done.stdout and "summary: other tabs under the flood" in done.stdout
