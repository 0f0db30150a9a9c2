"""Real images end to end: teach 10 Tiny-ImageNet classes x 40 images via `learn`, read straight from the
shared zip, then `predict` on their 500 val images: accuracy far above chance (10 %).

The manifests point *into* the zip (``data.zip/tiny-imagenet-200/train/<wnid>/...``), so this also proves
the zip source reads the real archive; names come from its words.txt. Classes are taught one after
another (the stream's order: class-incremental, the hard case for forgetting).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
from device_cli import run_subprocess, write_profile

ROOT = "tiny-imagenet-200"
N_CLASSES, N_TRAIN = 10, 40

pytestmark = [pytest.mark.data, pytest.mark.slow]


def write_manifests(zip_path: Path, folder: Path) -> tuple[Path, Path, list[str]]:
    """Train (40 per class) and val (all 50 per class) manifests for every 20th class of wnids.txt."""
    with zipfile.ZipFile(zip_path) as zf:
        wnids = zf.read(f"{ROOT}/wnids.txt").decode().split()
        words = dict(line.split("\t", 1) for line in zf.read(f"{ROOT}/words.txt").decode().splitlines() if line)
        members = zf.namelist()
    chosen = wnids[:: len(wnids) // N_CLASSES][:N_CLASSES]
    names = [words[w].split(",")[0].strip() for w in chosen]
    train, val = folder / "train.csv", folder / "val.csv"
    with open(train, "w", newline="") as tf, open(val, "w", newline="") as vf:
        train_rows, val_rows = csv.writer(tf), csv.writer(vf)
        for wnid, name in zip(chosen, names, strict=True):
            for i in range(N_TRAIN):
                train_rows.writerow([f"{zip_path}/{ROOT}/train/{wnid}/{wnid}_{i}.JPEG", name])
            for member in sorted(m for m in members if m.startswith(f"{ROOT}/val/{wnid}/")):
                val_rows.writerow([f"{zip_path}/{member}", name])
    return train, val, names


def test_teach_10_classes_from_the_zip_then_predict_their_val_images(tiny_zip: Path, test_bundle: Path,
                                                                    tmp_path: Path) -> None:
    train, val, names = write_manifests(tiny_zip, tmp_path)
    profile = write_profile(tmp_path)
    state = tmp_path / "state"
    learned = run_subprocess("learn", "--bundle", test_bundle, "--stream", train, "--state", state,
                             "--profile", profile, "--json")
    assert learned.code == 0, learned.stderr
    assert learned.summary["updates"] == N_CLASSES * N_TRAIN and learned.summary["bad_frames"] == 0
    assert sorted(learned.summary["known"]) == sorted(names)

    predicted = run_subprocess("predict", "--bundle", test_bundle, "--stream", val, "--state", state,
                               "--profile", profile, "--json")
    assert predicted.code == 0, predicted.stderr
    summary = predicted.summary
    print(f"Tiny-ImageNet, {N_CLASSES} classes x {N_TRAIN} images: accuracy {summary['accuracy']:.3f} "
          f"on {summary['labelled']} val images; per concept {summary['per_concept']}")
    assert summary["labelled"] == N_CLASSES * 50
    assert summary["accuracy"] >= 0.6  # chance 0.1; measured 0.844
    assert min(c["correct"] / c["total"] for c in summary["per_concept"].values()) >= 0.2  # no class forgotten
