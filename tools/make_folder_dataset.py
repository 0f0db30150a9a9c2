"""Write a "your own photos" folder from the Tiny-ImageNet subset: one folder per class, named as a user would.

    python tools/make_folder_dataset.py ../shared/data/tiny-imagenet-200-subset.zip export/build/photos25

25 classes, every image of each (its 200 training and 50 val images together: `edgecvm eval --data`
makes its own split). Folder names are everyday names in snake_case, as a user would type them; five of
them are not in the shipped tiny-imagenet-200 anchor file ("red panda" is "lesser panda" there), so
`edgecvm eval` embeds those names itself. `make eval-folder` runs the few-shot curve on the result
(docs/results.md).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = "tiny-imagenet-200"
FOLDERS = {  # wnid -> folder name
    "n02124075": "Egyptian_cat", "n04540053": "volleyball", "n04099969": "rocking_chair", "n07749582": "lemon",
    "n01641577": "bullfrog", "n02802426": "basketball", "n07920052": "espresso", "n03891332": "parking_meter",
    "n02106662": "german_shepherd_dog", "n02279972": "monarch_butterfly", "n02132136": "brown_bear",
    "n04146614": "school_bus", "n07873807": "pizza", "n02364673": "guinea_pig", "n04507155": "umbrella",
    "n03854065": "pipe_organ", "n01443537": "goldfish", "n09428293": "seashore", "n03085013": "computer_keyboard",
    "n07614500": "ice_cream", "n01944390": "snail", "n02769748": "backpack", "n02509815": "red_panda",
    "n03983396": "soda_bottle", "n07753592": "banana",
}


def main(source: Path, out: Path) -> None:
    written = 0
    with zipfile.ZipFile(source) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 4 and parts[0] == ROOT and parts[1] in ("train", "val") and parts[2] in FOLDERS \
                    and parts[3]:
                target = out / FOLDERS[parts[2]] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
                written += 1
    if written == 0:
        raise SystemExit(f"{source}: no images of the chosen classes (expected {ROOT}/train/<wnid>/, {ROOT}/val/<wnid>/)")
    print(f"{out}: {written} images in {len(FOLDERS)} class folders")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
