"""`edgecvm learn` / `edgecvm predict` end to end on the built-in sample: accuracy, resume, JSON, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from device_cli import REPO, Run, edgecvm_command, run_cli, saved_updates, write_profile

from edgecvm.cli import main


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_profile(tmp_path_factory.mktemp("profiles"))


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory, test_bundle: Path, samples_dir: Path, profile: Path) -> dict:
    """A state dir taught every other training image of the sample (20 per concept), shuffled."""
    state = tmp_path_factory.mktemp("taught") / "state"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # capsys is per test; this fixture is shared by the module
        code = main(["learn", "--bundle", str(test_bundle), "--stream", str(samples_dir / "train"), "--labels-from",
                     "dirs", "--state", str(state), "--profile", str(profile), "--every", "2", "--shuffle", "0",
                     "--checkpoint-every", "50", "--json"])
    return {"code": code, "records": [json.loads(line) for line in out.getvalue().splitlines()], "state": state}


def test_learn_reports_checkpoints_and_a_summary(taught: dict) -> None:
    assert taught["code"] == 0
    records = taught["records"]
    checkpoints = [r for r in records if r["event"] == "checkpoint"]
    assert [r["updates"] for r in checkpoints] == [50, 100, 150, 200]
    assert all(r["path"].endswith("state.npz") and len(r["sha256"]) == 64 for r in checkpoints)
    summary = records[-1]
    assert summary["event"] == "summary" and summary["frames"] == 200 and summary["updates"] == 200
    assert summary["bad_frames"] == 0 and summary["checkpoint_failures"] == 0 and summary["saved_update"] == 200
    assert len(summary["known"]) == 10 and summary["loss"] < 1.0
    assert saved_updates(taught["state"]) == 200


def test_predict_after_teaching_is_accurate(capsys, taught: dict, test_bundle: Path, samples_dir: Path,
                                            profile: Path) -> None:
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state",
                  taught["state"], "--profile", profile, "--json")
    assert run.code == 0
    frames = [r for r in run.records if r["event"] == "frame"]
    summary = run.summary
    assert len(frames) == summary["labelled"] == 100 and summary["vocab"] == "known" and summary["vocab_size"] == 10
    assert summary["accuracy"] == sum(f["correct"] for f in frames) / 100
    assert summary["accuracy"] >= 0.7  # chance is 0.1; measured 0.92 with 20 images per concept
    # "unknown": none of the taught concepts, with the nearest taught ones as its top-k
    assert all(len(f["top_k"]) == 5 and f["concept"] == ("unknown" if f["unknown"] else f["top_k"][0][0])
               for f in frames)
    assert summary["unknown"] == sum(f["unknown"] for f in frames) and summary["unknown_threshold"] is not None
    text = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--every", "10",
                   "--state", taught["state"], "--profile", profile, "--top-k", "2", "--unknown", "off")
    assert text.code == 0 and re.search(r"accuracy: \d+\.\d % \(\d+/10 labelled frames\), top-2", text.stdout)
    assert "unknown" not in text.stdout
    assert re.search(r"val_\d+\.JPEG: goldfish \(\d\.\d\d\)  \[(ok|WRONG): goldfish\]", text.stdout)


def test_zero_shot_without_state_answers_over_every_anchor(capsys, test_bundle: Path, samples_dir: Path,
                                                          profile: Path) -> None:
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--every", "2",
                  "--profile", profile, "--json")
    assert run.code == 0
    summary = run.summary
    assert summary["vocab"] == "all" and summary["vocab_size"] == 200 and summary["labelled"] == 50
    assert summary["accuracy"] > 0.2  # chance over 200 concepts is 0.005; measured 0.47 on all 100 images


def test_learn_resumes_the_state_dir(capsys, tmp_path: Path, taught: dict, test_bundle: Path, samples_dir: Path,
                                     profile: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(taught["state"], state)
    run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", samples_dir / "val" / "sock", "--label", "sock",
                  "--state", state, "--profile", profile, "--limit", "7", "--json")
    assert run.code == 0
    assert run.summary["updates"] == 7 and run.summary["updates_total"] == 207 and saved_updates(state) == 207
    assert len(run.summary["known"]) == 10  # nothing forgotten about what the state knew


def test_bad_frames_are_skipped_counted_and_named(capsys, caplog, tmp_path: Path, test_bundle: Path, samples_dir: Path,
                                                  profile: Path) -> None:
    stream = tmp_path / "stream"
    shutil.copytree(samples_dir / "val" / "lemon", stream / "lemon")
    good = sorted((stream / "lemon").glob("*.JPEG"))[0].read_bytes()
    (stream / "lemon" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (stream / "lemon" / "empty.jpg").write_bytes(b"")
    run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", stream, "--state", tmp_path / "state",
                  "--profile", profile, "--json")
    assert run.code == 0 and run.summary["bad_frames"] == 2 and run.summary["updates"] == 10
    assert "broken.jpg: cannot decode image" in caplog.text and "empty.jpg: empty file" in caplog.text
    predicted = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", stream, "--state", tmp_path / "state",
                        "--profile", profile, "--json")
    assert predicted.summary["bad_frames"] == 2 and predicted.summary["predicted"] == 10


@pytest.mark.parametrize("stream, extra, message", [
    ("val", ["--label", "egyptian kat"], "unknown concept 'egyptian kat'.*Close names: 'Egyptian cat'"),
    ("camera0", [], "camera0 gives unlabelled frames; say what they show with --label"),
    ("val", ["--labels-from", "manifest"], "labels from manifest need a .csv/.jsonl manifest"),
    ("val", ["--every", "0"], "--every: must be >= 1"),
    ("camera0", ["--label", "lemon", "--camera-size", "640"], "--camera-size: expected WIDTHxHEIGHT"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path, profile: Path,
                                         stream: str, extra: list[str], message: str) -> None:
    spec = stream if stream.startswith("camera") else samples_dir / stream
    try:
        run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", spec, "--state", tmp_path / "s",
                      "--profile", profile, *extra)
    except SystemExit as exc:  # argparse rejects malformed options itself, also with exit code 2
        run = Run(int(exc.code), "", capsys.readouterr().err.splitlines()[-1] + "\n")
    assert run.code == 2
    assert run.stderr.count("\n") == 1 and "edgecvm" in run.stderr and "error:" in run.stderr
    assert re.search(message, run.stderr), run.stderr
    assert not (tmp_path / "s" / "state.npz").exists()


def test_unknown_folder_label_is_refused_before_learning(capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path,
                                                         profile: Path) -> None:
    stream = tmp_path / "stream"
    shutil.copytree(samples_dir / "val" / "lemon", stream / "lemmon")
    run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", stream, "--state", tmp_path / "s",
                  "--profile", profile)
    assert run.code == 2 and "'lemmon'" in run.stderr and "'lemon'" in run.stderr
    assert not (tmp_path / "s" / "state.npz").exists()


def test_memory_budget_exceeded_exits_3_with_the_plan(capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path) -> None:
    tight = write_profile(tmp_path, "tight", memory_budget_mb=60)
    run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state", tmp_path / "s",
                  "--profile", tight)
    assert run.code == 3 and "exceeds the 60 MB budget" in run.stderr
    assert "backbone session" in run.stderr and "replay buffer" in run.stderr  # the table
    assert "640x480 RGB frame" in run.stderr  # the frames in flight, at the camera size asked for by default
    assert not (tmp_path / "s" / "state.npz").exists()
    large = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state", tmp_path / "s",
                    "--profile", tight, "--camera-size", "1920x1080")
    assert large.code == 3 and "1920x1080 RGB frame" in large.stderr


def test_profile_at_another_resolution_is_refused(capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path) -> None:
    other = write_profile(tmp_path, "small", resolution=160)
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--profile", other)
    assert run.code == 2 and "runs at 160 px but" in run.stderr


def test_predict_known_vocab_without_teaching_is_bad_input(capsys, test_bundle: Path, samples_dir: Path,
                                                          profile: Path) -> None:
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--profile", profile,
                  "--vocab", "known")
    assert run.code == 2 and "--vocab all" in run.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_then_exits_130(tmp_path: Path, test_bundle: Path, samples_dir: Path, profile: Path,
                                           signum: int) -> None:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        edgecvm_command("learn", "--bundle", test_bundle, "--stream", samples_dir / "train", "--state", state,
                        "--profile", profile, "--checkpoint-every", "7", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "checkpoint"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["interrupted_by"] == signal.Signals(signum).name
    assert summary["frames"] < 400 and summary["saved_update"] == summary["updates_total"]
    assert saved_updates(state) == summary["updates_total"]  # every update made it to disk
    assert err.strip().splitlines()[-1].startswith(f"edgecvm: error: interrupted by {signal.Signals(signum).name}")


def test_predict_interrupted_prints_its_summary_then_exits_130(test_bundle: Path, samples_dir: Path,
                                                               profile: Path) -> None:
    proc = subprocess.Popen(
        edgecvm_command("predict", "--bundle", test_bundle, "--stream", samples_dir / "train", "--profile", profile,
                        "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert json.loads(proc.stdout.readline())["event"] == "frame"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted_by"] == "SIGINT" and summary["frames"] < 400
    assert "Traceback" not in err


_OFFLINE_ONLY = ("torch", "onnx", "sentence_transformers", "transformers", "skimage", "timm", "torchvision")
_GUARDED_RUN = """
import importlib.abc, sys
OFFLINE = {offline!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OFFLINE:
            raise ImportError(f"device code imported {{name}}")
sys.meta_path.insert(0, Refuse())
from edgecvm.cli import main
for argv in {runs!r}:
    code = main(argv)
    if code != 0:
        sys.exit(code)
"""


def test_learn_and_predict_import_only_the_device_side(tmp_path: Path, test_bundle: Path, samples_dir: Path,
                                                         profile: Path) -> None:
    """A device installs numpy, onnxruntime, pillow and pyyaml only: both commands run with the offline extra refused."""
    state = tmp_path / "state"
    common = ["--bundle", str(test_bundle), "--profile", str(profile), "--json"]
    runs = [["learn", "--stream", str(samples_dir / "train"), "--labels-from", "dirs", "--every", "8",
             "--state", str(state), *common],
            ["predict", "--stream", str(samples_dir / "val"), "--every", "5", "--state", str(state), *common]]
    done = subprocess.run([edgecvm_command()[0], "-c", _GUARDED_RUN.format(offline=_OFFLINE_ONLY, runs=runs)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = [json.loads(line) for line in done.stdout.splitlines() if line.strip()][-1]
    assert summary["event"] == "summary" and summary["accuracy"] > 0.5  # a real run, not an early exit


def test_predict_on_folders_that_are_not_concepts_predicts_every_image_without_accuracy(
        capsys, caplog, tmp_path: Path, test_bundle: Path, samples_dir: Path, profile: Path, taught: dict) -> None:
    photos = tmp_path / "photos"
    (photos / "misc").mkdir(parents=True)
    (photos / "holiday 2025").mkdir()
    for i, image in enumerate(sorted((samples_dir / "val" / "goldfish").glob("*.JPEG"))[:3]):
        shutil.copy(image, photos / ("misc" if i else "holiday 2025") / image.name)
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", photos, "--profile", profile,
                  "--state", taught["state"], "--labels-from", "dirs", "--json")
    assert run.code == 0, run.stderr
    frames = [r for r in run.records if r["event"] == "frame"]
    assert len(frames) == 3 and all(r["correct"] is None for r in frames)
    assert sum(r["concept"] == "goldfish" for r in frames) >= 2  # answered among the taught concepts all the same
    summary = run.summary
    assert summary["accuracy"] is None and summary["labelled"] == 0
    assert "'holiday 2025', 'misc'" in summary["accuracy_note"] and "accuracy is left out" in summary["accuracy_note"]
    warnings = [r.getMessage() for r in caplog.records if "accuracy is left out" in r.getMessage()]
    assert len(warnings) == 1  # said once, also to a reader of the text output (as an `edgecvm: warning:` line)


def test_predict_on_a_camera_says_how_long_after_each_frame_arrived_it_answered(
        capsys, monkeypatch: pytest.MonkeyPatch, test_bundle: Path, samples_dir: Path, profile: Path) -> None:
    from fake_opencv import FakeOpenCV

    from edgecvm.device import streams

    monkeypatch.setattr(streams, "import_cv2", lambda: FakeOpenCV(mode=(640, 480)))
    run = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", "camera0", "--limit", "4",
                  "--profile", profile, "--json")
    assert run.code == 0, run.stderr
    frames = [r for r in run.records if r["event"] == "frame"]
    assert len(frames) == 4 and all(isinstance(r["latency_ms"], float) and r["latency_ms"] >= 0 for r in frames)
    latency = run.summary["latency"]
    assert latency["frames"] == 4 and 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert latency["p95_ms"] <= max(r["latency_ms"] for r in frames) * 1.01 + 0.01
    text = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", "camera0", "--limit", "2",
                   "--profile", profile)
    assert text.code == 0 and re.search(r"answered [\d.]+ ms after a frame arrived \(p50\), [\d.]+ ms \(p95\)",
                                        text.stdout)
    # files arrive all at once: no latency to speak of
    files = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", samples_dir / "val", "--limit", "2",
                    "--profile", profile, "--json")
    assert [r["latency_ms"] for r in files.records if r["event"] == "frame"] == [None, None]
    assert files.summary["latency"] is None and "after a frame arrived" not in files.stdout


def test_predict_on_a_video_played_in_real_time_measures_latency_as_on_a_camera(
        capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path, profile: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 160))
    for image in sorted((samples_dir / "val" / "lemon").iterdir())[:8]:
        writer.write(cv2.resize(cv2.imread(str(image)), (160, 160)))
    writer.release()
    live = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", clip, "--realtime", "--profile", profile,
                   "--json")
    assert live.code == 0, live.stderr
    frames = [r for r in live.records if r["event"] == "frame"]
    assert frames and all(isinstance(r["latency_ms"], float) for r in frames)  # a late frame may be skipped
    assert live.summary["latency"]["frames"] == len(frames)
    decoded = run_cli(capsys, "predict", "--bundle", test_bundle, "--stream", clip, "--profile", profile, "--json")
    assert decoded.summary["frames"] == 8 and decoded.summary["latency"] is None  # as fast as it decodes: no arrival
    # learn takes the same option, to rehearse teaching from a camera with a recorded clip
    taught = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", clip, "--realtime", "--label", "lemon",
                     "--state", tmp_path / "state", "--profile", profile, "--json")
    assert taught.code == 0, taught.stderr
    assert taught.summary["known"] == ["lemon"] and 1 <= taught.summary["updates"] <= 8
