"""`edgecvm profiles list|show NAME`: what each device profile lets the learner spend.

Profiles are the contract between a deployment and the learner (threads,
memory budget, providers, precision), so they are listed and shown exactly as
``load_profile`` validates them: a profile that ``show`` prints is one that
``learn`` will accept. The YAML files carry the sources of every figure in
comments; ``show`` names the file so they are one ``cat`` away.
"""

from __future__ import annotations

import argparse
import json

from edgecvm.device.profiles import PROFILE_DIR, available_profiles, load_profile, profile_as_dict


def cmd_list(args: argparse.Namespace) -> int:
    profiles = [load_profile(name) for name in available_profiles()]
    if args.json:
        print(json.dumps([profile_as_dict(p) for p in profiles], indent=2))
        return 0
    rows = [("name", "cores/thr", "RAM MB", "budget MB", "input", "providers", "description")]
    for p in profiles:
        providers = ",".join(name.removesuffix("ExecutionProvider") for name in p.execution_providers)
        rows.append((p.name, f"{p.cpu_cores}/{p.threads}", str(p.ram_mb), str(p.memory_budget_mb),
                     f"{p.resolution} {p.precision}", providers, p.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"\n{len(profiles)} profiles in {PROFILE_DIR}; details: edgecvm profiles show NAME")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    profile = load_profile(args.name)
    data = profile_as_dict(profile)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(key) for key in data)
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key:<{width}}  {shown}")
    source = args.name if args.name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{profile.name}.yaml"
    print(f"\nfrom {source} (its comments cite where each figure comes from)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "profiles", help="list the device profiles or show one",
        description="Device profiles (edgecvm/resources/profiles/*.yaml) say what the learner may spend on a device: threads, "
        "memory budget (learn refuses to start with exit 3 when its plan does not fit), ONNX Runtime providers, "
        "input size and precision, replay size. Every profile is validated as it is listed.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="one line per shipped profile",
                                 description="One line per shipped profile (all validated).")
    listing.add_argument("--json", action="store_true", help="every field of every profile as a JSON list")
    listing.set_defaults(func=cmd_list)
    show = actions.add_parser("show", help="every field of one profile",
                              description="Every field of one profile, validated.")
    show.add_argument("name", help="profile name (e.g. raspberry-pi-4) or a YAML path")
    show.add_argument("--json", action="store_true", help="the fields as a JSON object")
    show.set_defaults(func=cmd_show)
