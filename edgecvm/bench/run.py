"""Will it fit, and how fast does it run? Measured on this machine, per device profile (``edgecvm bench``).

The default input is camera-shaped (camera_input.py: the sample at
640 x 480 px, and the same frames as a 30 frames/s video); the 64 px sample
is ``--stream sample``. For each profile: per-stage latency
(measure.time_stages), the backbone alone on preprocessed frames and the
real ``predict`` and ``learn`` commands, each in its own child process, side by side in
each round (frames/s, their ratios to the backbone, CPU seconds per frame),
latency from arrival to answer on the camera-rate video, the peak RSS of
``learn`` with its anonymous and file-backed parts and the phase where it
happens, the memory verdict against the profile's ``memory_budget_mb``
(PASS/FAIL, see ``memory_verdict``), cold start to first prediction, the torch reference learner (torch_ref.py) when
the export extra is installed, and a FLOPs-based estimate for the profile's
real device, always labelled "estimate" because nothing ran there.

What is measured is what this machine can run: the given bundle's input size
and precision (a profile asking 160 px int8 is measured with a 224 px fp32
bundle unless one matching it is passed as another ``--bundle``), at most as
many ONNX Runtime threads as this machine has cores, and whichever execution
provider this onnxruntime build has (a Jetson profile's TensorRT/CUDA fall
back to the CPU here), and int8 with exact kernels where this CPU's fast ones would
clamp (``device/int8_kernels.py``). Each of these is said in the result's ``notes``.
The child runs get the profile with its budget raised to its RAM, so that
``learn`` neither refuses to start nor sheds replay and its real peak is
seen; the verdict then compares that peak with the real budget, and
``plan_fits_budget`` says whether ``learn`` would start under it at all.

Library code: ``run_bench`` returns the report as JSON-ready data and says
what it is doing only through the ``log`` and ``progress`` callbacks it is
given; the command line (cli/bench.py) prints it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median

import onnxruntime as ort
import yaml

from edgecvm import __version__, resources
from edgecvm.bench.camera_input import camera_sample, camera_video
from edgecvm.bench.measure import (
    camera_latency,
    predict_extractor,
    time_stages,
    write_frame_manifest,
)
from edgecvm.bench.rounds import (
    at_least,
    backbone_busy_cores,
    cpu_ceiling,
    cpu_per_frame,
    paired_ratio,
    ratio,
    run_round,
    torch_reference_missing,
)
from edgecvm.device.device import open_device
from edgecvm.device.frame_size import CAPTURE_SIZE
from edgecvm.device.int8_kernels import this_cpu_saturates
from edgecvm.device.memory_plan import MB
from edgecvm.device.profiles import DeviceProfile, profile_as_dict
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import Bundle
from edgecvm.reporting import ProgressFactory, no_log, silent

SAMPLE_STREAM = resources.sample_dir() / "train"
NAMED_STREAMS = ("camera", "sample")  # --stream: the generated camera-sized sample (default), the 64 px one
# Backbone cost per frame at 224 px: torch.utils.flop_counter.FlopCounterMode over
# lite0_torch.EfficientNetLite0.forward_features (2 FLOPs per multiply-add; test_bench checks it).
# Convolutions dominate, so it scales with the pixel count: 0.392 GFLOP at 160 px.
LITE0_GFLOP_224 = 0.768
SCHEMA = "edgecvm.bench/1"


def default_bundle(log: Callable[[str], None] = no_log) -> Path:
    """A 224 px fp32 bundle in the user's cache (``bundles/lite0-224``), exported on first use (export extra).

    ``log`` hears that an export starts: it takes a while, and the user did not ask for it by name."""
    bundle = resources.user_cache_dir() / "bundles" / "lite0-224"
    if (bundle / "manifest.json").is_file():
        return bundle


def pick_bundle(profile: DeviceProfile, bundles: list[Bundle]) -> tuple[Bundle, list[str]]:
    """The bundle closest to what the profile asks (input size first, then precision), and what differs."""
    def score(bundle: Bundle) -> tuple[bool, bool]:
        return bundle.manifest.input_size == profile.resolution, bundle.manifest.precision == profile.precision

    bundle = max(bundles, key=score)  # first of the best: the order of --bundle breaks ties
    size, precision = bundle.manifest.input_size, bundle.manifest.precision
    notes = []
    if (size, precision) != (profile.resolution, profile.precision):
        if profile.precision == "fp16":  # export writes fp32 or int8 only
            fix = "there are no fp16 bundles; TensorRT makes fp16 engines from an fp32 graph only with its " \
                  "trt_fp16_enable option, which the runtime does not set yet, so a Jetson runs fp32 too"
        else:
            quantize = " --quantize int8" if profile.precision == "int8" else ""
            fix = f"export with export/lite0-{profile.resolution}.yaml{quantize} and pass it as another --bundle"
        notes.append(f"measured with the bundle's {size} px {precision}; the profile asks {profile.resolution} px "
                     f"{profile.precision} ({fix})")
    return bundle, notes


def available_cores() -> int:
    """The cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measured_profile(profile: DeviceProfile, bundle: Bundle) -> tuple[DeviceProfile, list[str]]:
    """The profile as this machine can run it: the bundle's size/precision, threads capped at our cores."""
    cores = available_cores()
    threads = min(profile.threads, cores)
    notes = []
    if threads < profile.threads:
        notes.append(f"the profile asks {profile.threads} threads; this machine has {cores} cores: measured with "
                     f"{threads}")
    precision = bundle.manifest.precision
    if precision == "int8" and this_cpu_saturates():
        notes.append("int8 ran ONNX Runtime's exact int8 kernels, slower than its fast ones: on this x86 CPU "
                     "without VNNI the fast ones clamp their sums (docs/benchmarks.md, int8 on x86 without VNNI); "
                     "an ARM board or a CPU with VNNI runs the fast ones")
    measured = dataclasses.replace(profile, resolution=bundle.manifest.input_size, precision=precision,
                                   threads=threads, cpu_cores=max(cores, threads))
    return measured, notes


def write_child_profile(profile: DeviceProfile, folder: Path) -> Path:
    """The measured profile for the child runs, with the budget raised to the RAM (see module docstring)."""
    data = profile_as_dict(dataclasses.replace(profile, memory_budget_mb=profile.ram_mb))
    data.pop("name")
    path = folder / f"{profile.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def estimate(profile: DeviceProfile) -> dict[str, object]:
    """Backbone time on the profile's real device from FLOPs and its ``compute_gflops``: an estimate, not a measurement."""
    gflop = LITE0_GFLOP_224 * (profile.resolution / 224) ** 2
    ms = gflop / profile.compute_gflops * 1000.0
    return {"label": "estimate", "basis": f"backbone FLOPs at {profile.resolution} px / compute_gflops of the profile; "
            "ignores precision, memory bandwidth, decode and head", "gflop_per_frame": round(gflop, 3),
            "compute_gflops": profile.compute_gflops, "backbone_ms": round(ms, 1),
            "backbone_frames_per_s": round(1000.0 / ms, 1), "target_latency_ms": profile.target_latency_ms,
            "meets_target_latency": ms <= profile.target_latency_ms}


def _load_average() -> float | None:
    """The 1-minute load average: other processes on a shared machine skew every figure (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def bench_profile(profile: DeviceProfile, bundles: list[Bundle], manifest: Path, work: Path, torch_ref: bool,
                  repeat: int = 1, head_method: str | None = None, progress: ProgressFactory = silent,
                  log: Callable[[str], None] = no_log, tune_process: bool = False,
                  video: Path | str | None = None, frame_size: tuple[int, int] = CAPTURE_SIZE) -> dict[str, object]:
    """Every measurement for one profile (see module docstring); JSON-ready.

    ``tune_process``: open the in-process device as the ``edgecvm`` commands do (device/process_tuning.py),
    so its stage timings are those of the commands' process; it changes this whole process.

    ``progress`` gets a bar over the in-process stage timings, ``log`` a line
    per round of child runs (each takes seconds to minutes, with no bar).

    ``video``: the camera-rate source (a path), or why there is none (a string).

    With ``repeat`` > 1 the child runs are repeated in rounds (backbone alone,
    predict, learn, torch, backbone alone, predict, ...), so a burst of load from another process
    hits all of them alike; frames/s and cold start are the medians, peak RSS
    the maximum (the budget must hold for the worst run). The frames/s ratios
    are the medians of each round's own ratio: its runs were side by side,
    while a ratio of medians can pair one round's learn with another's predict
    (``make bench``, host: a burst slowed one round's learn to 31.7 frames/s;
    rounds 0.96, 0.48, 0.98: median 0.96, ratio of the medians 0.86).
    """
    load_before = _load_average()
    bundle, notes = pick_bundle(profile, bundles)
    measured, more = measured_profile(profile, bundle)
    notes += more
    child_yaml = write_child_profile(measured, work)
    device = open_device(bundle.folder, child_yaml, None, head_method=head_method, tune_process=tune_process,
                         frame_size=frame_size)
    providers = device.extractor.providers
    if providers[0] != profile.execution_providers[0]:
        notes.append(f"the profile asks {', '.join(profile.execution_providers)}; this onnxruntime "
                     f"({ort.__version__}) has {', '.join(ort.get_available_providers())}: measured on "
                     f"{providers[0]}")
    plan_mb = round(device.plan.total_bytes / MB, 1)
    plan_items = device.plan.as_dict()["items"]
    file_backed_mb = round(device.plan.file_backed_bytes / MB, 1)
    stages = time_stages(device, manifest, profile.name, progress)
    replay_capacity, head_method = device.learner.replay.capacity, device.learner.method.name  # the default resolved
    frames_in_manifest = sum(1 for _ in manifest.open()) - 1

    missing = torch_reference_missing() if torch_ref else "--no-torch-ref"
    rounds = []
    for i in range(repeat):
        log(f"bench {profile.name}: backbone alone, then predict, learn{'' if missing else ', torch reference'} in "
            f"child processes (round {i + 1}/{repeat})")
        rounds.append(run_round(profile.name, bundle, child_yaml, manifest, work / f"state-{profile.name}-{i}",
                                measured, torch_ref=missing is None, head_method=head_method, frame_size=frame_size))
    if isinstance(video, Path):
        log(f"bench {profile.name}: a {video.name} played at its frame rate, arrival to answer")
        camera: dict[str, object] = camera_latency(predict_extractor(bundle, measured), device.learner, video,
                                                   frames_in_manifest)
    else:
        camera = {"source": None, "reason": video or "no video given", "p50_ms": None, "p95_ms": None}
    del device
    predict_fps = round(median(r.predict_fps for r in rounds), 2)
    learn_fps = round(median(r.learn_fps for r in rounds), 2)
    learn_rss = max(r.learn_rss_mb for r in rounds)
    frames, bad_frames = rounds[0].frames, rounds[0].bad_frames
    if bad_frames:
        notes.append(f"{bad_frames} of {frames} frames could not be decoded and were skipped")

    reference: dict[str, object] = {"available": False, "reason": missing or rounds[0].torch_error}
    if missing is None and all(r.torch_fps is not None for r in rounds):
        torch_fps = round(median(r.torch_fps for r in rounds), 2)  # type: ignore[misc]
        torch_rss = max(r.torch_rss_mb for r in rounds)  # type: ignore[type-var]
        reference = {"available": True, "frames_per_s": torch_fps, "peak_rss_mb": torch_rss,
                     "learn_over_torch_fps": paired_ratio(rounds, "learn_fps", "torch_fps"),
                     "learn_over_torch_rss": ratio(learn_rss, torch_rss)}

    budget = profile.memory_budget_mb
    kind = (bundle.manifest.input_size, bundle.manifest.precision)
    is_lite0_224_fp32 = kind == (224, "fp32")
    learn_over_predict = paired_ratio(rounds, "learn_fps", "predict_fps")
    predict_over_backbone = paired_ratio(rounds, "predict_fps", "backbone_fps")
    learn_over_backbone = paired_ratio(rounds, "learn_fps", "backbone_fps")
    learn_cpu_over_predict = paired_ratio(rounds, "learn_cpu_s", "predict_cpu_s")
    memory = max((r.learn_memory for r in rounds if r.learn_memory), key=lambda m: m["peak_rss_mb"], default=None)
    anon = [r.learn_memory["max_anon_mb"] for r in rounds if r.learn_memory and r.learn_memory["max_anon_mb"]]
    judged = round(max(anon) + file_backed_mb, 1) if anon else learn_rss  # no /proc: the whole RSS
    camera_p95 = camera.get("p95_ms")
    cores = available_cores()
    return {
        "profile": profile.name, "bundle": str(bundle.folder),
        "measured_with": {"resolution": measured.resolution, "precision": measured.precision,
                          "threads": measured.threads, "providers": providers, "ort_cpu_arena": measured.ort_cpu_arena,
                          "head_method": head_method},
        "notes": notes, "frames": frames, "bad_frames": bad_frames, "repeat": repeat, "stages": stages,
        "backbone_frames_per_s": round(median(r.backbone_fps for r in rounds), 2),  # type: ignore[type-var]
        "predict_frames_per_s": predict_fps, "learn_frames_per_s": learn_fps, "learn_over_predict": learn_over_predict,
        "predict_over_backbone": predict_over_backbone, "learn_over_backbone": learn_over_backbone,
        "backbone_cpu_s_per_frame": cpu_per_frame(rounds, "backbone_cpu_s"),
        "predict_cpu_s_per_frame": cpu_per_frame(rounds, "predict_cpu_s"),
        "learn_cpu_s_per_frame": cpu_per_frame(rounds, "learn_cpu_s"),
        "learn_cpu_over_predict": learn_cpu_over_predict,
        "cpu_ceiling": {"cores": cores, "backbone_busy_cores": backbone_busy_cores(rounds),
                        "predict_over_backbone": cpu_ceiling(rounds, "predict_cpu_s", cores),
                        "learn_over_backbone": cpu_ceiling(rounds, "learn_cpu_s", cores)},
        "camera_rate": camera,
        "cold_start_s": median(r.cold_start_s for r in rounds if r.cold_start_s is not None) if any(
            r.cold_start_s is not None for r in rounds) else None,
        "predict_peak_rss_mb": max(r.predict_rss_mb for r in rounds),
        "learn_peak_rss_mb": learn_rss, "learn_memory": memory, "memory_budget_mb": budget,
        "memory_judged_mb": judged,
        "memory_verdict_basis": "peak anonymous RSS of learn + the plan's file-backed allowance "
                                f"({file_backed_mb} MB)" if anon else "peak RSS of learn (no /proc here)",
        "memory_verdict": "PASS" if judged <= budget else "FAIL",
        "memory_plan_mb": plan_mb, "plan_fits_budget": plan_mb <= budget, "memory_plan_items": plan_items,
        "replay_filled": f"{min(frames, replay_capacity)}/{replay_capacity}",
        "runs": [dataclasses.asdict(r) for r in rounds],
        "load_average_1m": {"before": load_before, "after": _load_average()},
        "torch_reference": reference, "estimate": estimate(profile),
        "targets": {
            "learn_over_predict_ge_0_9": None if learn_over_predict is None else learn_over_predict >= 0.9,
            "predict_over_backbone_ge_0_9": at_least(predict_over_backbone, 0.9) if is_lite0_224_fp32 else None,
            "learn_over_backbone_ge_0_85": at_least(learn_over_backbone, 0.85) if is_lite0_224_fp32 else None,
            "learn_over_backbone_ge_0_75_160_int8": at_least(learn_over_backbone, 0.75) if kind == (160, "int8")
            else None,
            "learn_cpu_le_1_15_predict": None if learn_cpu_over_predict is None else learn_cpu_over_predict <= 1.15,
            "camera_p95_le_66_ms": None if camera_p95 is None else camera_p95 <= 66,
            "learn_over_torch_fps_ge_2": None if reference.get("learn_over_torch_fps") is None
            else reference["learn_over_torch_fps"] >= 2.0,
            "learn_over_torch_rss_le_third": None if reference.get("learn_over_torch_rss") is None
            else reference["learn_over_torch_rss"] <= 1 / 3,
            "learn_peak_rss_le_100_mb_lite0_224_fp32": learn_rss <= 100 if is_lite0_224_fp32 else None,
        },
    }


def run_bench(profiles: Sequence[DeviceProfile], bundles: list[Bundle], stream: str, frames: int, repeat: int = 1,
              torch_ref: bool = True, head_method: str | None = None, progress: ProgressFactory = silent,
              log: Callable[[str], None] = no_log, tune_process: bool = False,
              frame_size: tuple[int, int] = CAPTURE_SIZE) -> dict[str, object]:
    """Every profile measured on the same ``frames`` frames of ``stream``: the report (schema ``SCHEMA``), JSON-ready.

    ``stream``: "camera" (the sample at ``frame_size``, (width, height) px, generated once into the user's
    cache), "sample" (the 64 px sample) or a labelled source. The camera-rate video, at ``frame_size``, is
    measured with every stream (OpenCV needed); the memory plans count frames of that size."""
    source = resolve_stream(stream, log, frame_size)
    video: Path | str
    try:
        video = camera_video(frame_size)
    except BadInputError as exc:
        video = str(exc)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgecvm-bench-") as tmp:
        work = Path(tmp)
        manifest = write_frame_manifest(str(source), frames, work / "frames.csv")
        for profile in profiles:
            results.append(bench_profile(profile, bundles, manifest, work, torch_ref, repeat, head_method,
                                         progress, log, tune_process, video, frame_size))
    return {
        "schema": SCHEMA, "edgecvm": __version__, "onnxruntime": ort.__version__, "cpu_count": os.cpu_count(),
        "stream": str(stream), "source": str(source), "frame_size": list(frame_size), "frames": frames,
        "repeat": repeat, "results": results,
    }


def resolve_stream(stream: str, log: Callable[[str], None] = no_log,
                   frame_size: tuple[int, int] = CAPTURE_SIZE) -> Path | str:
    """A named bench input ("camera", "sample"; NAMED_STREAMS) as its folder, anything else as given."""
    if stream == "camera":
        log(f"bench: camera-sized input (the sample at {frame_size[0]} x {frame_size[1]} px) in the user's cache")
        return camera_sample(frame_size)
    return SAMPLE_STREAM if stream == "sample" else stream
