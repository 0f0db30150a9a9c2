"""`make demo`: the whole job end to end, offline, in a couple of minutes on 2 cores.

    python -m edgecvm.cli.demo --out export/build/demo

1. anchors: the 200 Tiny-ImageNet concept names embedded offline with
   `edgecvm anchors build` (~20 s), checked byte for byte against the
   anchor file the repository ships;
2. export: a ConSE bundle (skipped when an up-to-date one is already in --out);
3. zero-shot: name skimage's "chelsea" (a cat) and "coffee" photos before any teaching;
4. zero-shot accuracy on the built-in sample's val images, over all 200 concepts;
5. teach: `edgecvm learn` on the sample's train images, one concept after another;
6. predict: accuracy on the same val images among the taught concepts, and over all 200.

Every step runs the real command in a subprocess, exactly as a user would
type it (printed before it runs), and reads its ``--json`` output.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgecvm import resources
from edgecvm.errors import EdgeCVMError
from edgecvm.formats.bundle import load_bundle
from edgecvm.formats.integrity import sha256_file

SHIPPED_ANCHORS = resources.anchors_file("tiny-imagenet-200.anchors.npz")
CONCEPTS = resources.anchors_file("tiny-imagenet-200.tsv")
RECIPE = resources.recipe("lite0-224.yaml")
SAMPLE = resources.sample_dir()
PROFILE = "host"


def edgecvm(*args: object) -> list[dict]:
    """Run one edgecvm command (stderr passes through: progress, warnings); its stdout as JSON records."""
    argv = [str(a) for a in args]
    shown = " ".join(f"'{a}'" if " " in a else a for a in argv)
    print(f"  $ edgecvm {shown.replace(str(Path.cwd()) + '/', '')}", flush=True)
    done = subprocess.run([sys.executable, "-m", "edgecvm", *argv], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: `edgecvm {argv[0]}` failed with exit code {done.returncode} (see above)")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def build_anchors(anchors: Path) -> None:
    start = step("1. Concept anchors: 200 Tiny-ImageNet concept names embedded by all-MiniLM-L6-v2")
    edgecvm("anchors", "build", "--concepts", CONCEPTS, "--out", anchors, "--json")
    summary = edgecvm("anchors", "show", anchors, "--pairs", "3", "--json")[0]
    same = SHIPPED_ANCHORS.is_file() and sha256_file(anchors) == sha256_file(SHIPPED_ANCHORS)
    print(f"  {anchors.name}: {summary['count']} concepts, {summary['dim']}-d, stored as {summary['dtype']}; "
          f"{'byte for byte the file the repository ships' if same else 'NOT the same bytes as ' + str(SHIPPED_ANCHORS)} "
          f"({time.monotonic() - start:.1f} s)")


def ensure_bundle(bundle: Path, anchors: Path) -> None:
    start = step("2. Bundle: EfficientNet-Lite0 exported to ONNX, ConSE head for zero-shot naming")
    reason = _stale_reason(bundle, anchors)
    if reason is None:
        print(f"  {bundle} is up to date (every sha256 verified, same anchors and recipe): not re-exported")
        return
    print(f"  exporting ({reason})")
    edgecvm("export", "--recipe", RECIPE, "--anchors", anchors, "--out", bundle, "--head-init", "conse", "--json")
    manifest = load_bundle(bundle).manifest
    print(f"  wrote {bundle}: ONNX Runtime matches torch to {manifest.parity_max_abs_diff:.1e} "
          f"({time.monotonic() - start:.1f} s)")


def _stale_reason(bundle: Path, anchors: Path) -> str | None:
    """Why the bundle in ``bundle`` must be (re-)exported, or None when it can be used as is."""
    if not bundle.exists():
        return "no bundle yet"
    try:
        manifest = load_bundle(bundle).manifest
    except EdgeCVMError as exc:
        return f"the existing one does not verify: {exc}"
    if manifest.anchors_sha256 != sha256_file(anchors):
        return "the anchor file changed"
    if manifest.recipe.get("file") != RECIPE.name or manifest.head_init != "conse":
        return "it was made with another recipe or head"
    return None


def zero_shot_photos(bundle: Path, out: Path) -> None:
    start = step("3. Zero-shot, before any teaching: what are these photos? (over all 200 concepts)")
    from PIL import Image
    from skimage import data  # the export extra; the device side never needs it

    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.png")
    for record in edgecvm("predict", "--bundle", bundle, "--stream", photos, "--top-k", "3", "--json"):
        if record["event"] == "frame":
            alternatives = ", ".join(f"{n} {s:.2f}" for n, s in record["top_k"][1:])
            print(f"  {Path(record['origin']).name}: {record['concept']} (cosine {record['score']:.2f}; "
                  f"then {alternatives})")
    print(f"  ({time.monotonic() - start:.1f} s)")


def accuracy(bundle: Path, state: Path | None, vocab: str) -> dict:
    args = ["predict", "--bundle", bundle, "--stream", SAMPLE / "val", "--profile", PROFILE, "--vocab", vocab, "--json"]
    if state is not None:
        args += ["--state", state]
    return edgecvm(*args)[-1]


def teach(bundle: Path, state: Path) -> dict:
    start = step("5. Teaching: `learn` on the sample's 400 train images, one concept after another")
    if state.exists():
        shutil.rmtree(state)  # the demo starts from scratch; `learn` would otherwise resume this state
    records = edgecvm("learn", "--bundle", bundle, "--stream", SAMPLE / "train", "--state", state,
                      "--profile", PROFILE, "--json")
    summary = records[-1]
    checkpoints = [r["updates"] for r in records if r["event"] == "checkpoint"]
    print(f"  {summary['frames']} frames at {summary['frames_per_s']} frames/s, {summary['updates']} head updates, "
          f"{summary['bad_frames']} bad frames; checkpoints at updates {checkpoints}; peak RSS "
          f"{summary['peak_rss_mb']} MB ({time.monotonic() - start:.1f} s)")
    print(f"  learned concepts, in teaching order: {', '.join(summary['known'])}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecvm.cli.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("export") / "build" / "demo",
                        help="working folder: bundle, state dir, photos (default export/build/demo)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    anchors, bundle, state = out / SHIPPED_ANCHORS.name, out / "bundle", out / "state"
    started = time.monotonic()
    print("edgecvm demo: a device learns new visual concepts from its stream, offline, without forgetting.")
    build_anchors(anchors)
    ensure_bundle(bundle, anchors)
    zero_shot_photos(bundle, out)

    start = step("4. Zero-shot accuracy on the sample's 100 val images (10 concepts, answers over all 200)")
    before = accuracy(bundle, None, "all")
    print(f"  accuracy {100 * before['accuracy']:.1f} % ({before['correct']}/{before['labelled']}); "
          f"chance would be 0.5 % ({time.monotonic() - start:.1f} s)")

    taught = teach(bundle, state)

    start = step("6. After teaching: the same 100 val images")
    known = accuracy(bundle, state, "known")
    everything = accuracy(bundle, state, "all")
    print(f"  among the {len(taught['known'])} taught concepts: accuracy {100 * known['accuracy']:.1f} % "
          f"({known['correct']}/{known['labelled']}; chance 10 %)")
    print(f"  over all 200 concepts: {100 * everything['accuracy']:.1f} % (zero-shot before teaching: "
          f"{100 * before['accuracy']:.1f} %) ({time.monotonic() - start:.1f} s)")
    worst = min(known["per_concept"].items(), key=lambda kv: kv[1]["correct"])
    print(f"  the first concept taught, {taught['known'][0]!r}, is still recognised: "
          f"{known['per_concept'][taught['known'][0]]['correct']}/10 (weakest concept: {worst[0]!r}, "
          f"{worst[1]['correct']}/10)")

    print(f"\nDone in {time.monotonic() - started:.0f} s. Try it yourself:\n"
          f"  edgecvm predict --bundle {bundle} --state {state} --stream {SAMPLE / 'val'}\n"
          f"  edgecvm learn --bundle {bundle} --state {state} --profile {PROFILE} --stream camera0 --label teapot\n"
          f"  edgecvm state show {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
