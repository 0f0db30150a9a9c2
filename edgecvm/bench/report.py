"""The human-readable side of `edgecvm bench`: one block per profile and a summary table.

The same numbers as the JSON report (``bench.bench_profile`` builds it; keys
documented in README.md, "Bench"), so the table and the file never disagree:
this module only formats, it computes nothing.
"""

from __future__ import annotations

from typing import Any

STAGE_NAMES = {"decode": "decode", "preprocess": "preprocess", "backbone": "backbone",
               "head_predict": "head predict", "head_update": "head update (+replay)"}


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "MISSED")


def profile_block(r: dict[str, Any]) -> list[str]:
    """Everything measured for one profile, with the notes that say what was actually run."""
    m = r["measured_with"]
    lines = [f"== {r['profile']}: measured on this machine with {m['resolution']} px {m['precision']}, "
             f"{m['threads']} threads, {m['providers'][0]}, ORT arena {'on' if m['ort_cpu_arena'] else 'off'}, "
             f"{r['frames']} frames x {r['repeat']} rounds (1-min load average {r['load_average_1m']['before']} "
             f"-> {r['load_average_1m']['after']})"]
    lines += [f"   note: {note}" for note in r["notes"]]
    lines.append(f"   {'stage':<24}{'p50 ms':>9}{'p95 ms':>9}")
    for key, name in STAGE_NAMES.items():
        stage = r["stages"][key]
        lines.append(f"   {name:<24}{_num(stage['p50_ms'], 2):>9}{_num(stage['p95_ms'], 2):>9}")
    lines.append(f"   backbone alone {_num(r['backbone_frames_per_s'])} frames/s; predict "
                 f"{_num(r['predict_frames_per_s'])} ({_num(r['predict_over_backbone'], 2)}x backbone), learn "
                 f"{_num(r['learn_frames_per_s'])} ({_num(r['learn_over_backbone'], 2)}x backbone); learn/predict "
                 f"{_num(r['learn_over_predict'], 2)}; cold start to first prediction {_num(r['cold_start_s'], 2, ' s')}")
    lines.append(f"   CPU per frame: backbone alone {_num(r['backbone_cpu_s_per_frame'], 4, ' s')}, predict "
                 f"{_num(r['predict_cpu_s_per_frame'], 4, ' s')}, learn "
                 f"{_num(r['learn_cpu_s_per_frame'], 4, ' s')} ({_num(r['learn_cpu_over_predict'], 2)}x predict)")
    ceiling = r["cpu_ceiling"]
    lines.append(f"   CPU ceiling on {ceiling['cores']} cores (the backbone alone kept "
                 f"{_num(ceiling['backbone_busy_cores'], 2)} busy): predict <= "
                 f"{_num(ceiling['predict_over_backbone']['same_load'], 2)}x backbone at that load, <= "
                 f"{_num(ceiling['predict_over_backbone']['all_cores'], 2)}x with every core busy; learn <= "
                 f"{_num(ceiling['learn_over_backbone']['same_load'], 2)}x, "
                 f"<= {_num(ceiling['learn_over_backbone']['all_cores'], 2)}x")
    cam = r["camera_rate"]
    if cam.get("source"):
        lines.append(f"   camera-rate source (30 frames/s video): arrival to answer p50 {_num(cam['p50_ms'], 1, ' ms')}, "
                     f"p95 {_num(cam['p95_ms'], 1, ' ms')} over {cam['frames']} frames")
    else:
        lines.append(f"   camera-rate source: not run ({cam['reason']})")
    mem = r["learn_memory"] or {}
    at_peak = mem.get("at_peak_mb") or {}
    lines.append(f"   learn peak RSS {_num(r['learn_peak_rss_mb'], 1, ' MB')} (at the largest sample: anonymous "
                 f"{_num(at_peak.get('anon'), 1)} + file-backed {_num(at_peak.get('file'), 1)} MB; most anonymous "
                 f"{_num(mem.get('max_anon_mb'), 1)}, most file-backed {_num(mem.get('max_file_mb'), 1)}; peak reached "
                 f"in {mem.get('peak_phase') or 'n/a'})")
    lines.append(f"   memory judged {_num(r['memory_judged_mb'], 1, ' MB')} ({r['memory_verdict_basis']}) vs budget "
                 f"{r['memory_budget_mb']} MB: {r['memory_verdict']}; memory plan {r['memory_plan_mb']} MB "
                 f"({'fits: learn starts' if r['plan_fits_budget'] else 'over budget: learn refuses to start, exit 3'})"
                 f"; replay filled {r['replay_filled']}")
    ref = r["torch_reference"]
    if ref["available"]:
        lines.append(f"   torch reference {_num(ref['frames_per_s'])} frames/s, peak RSS {ref['peak_rss_mb']} MB; "
                     f"learn/torch: {_num(ref['learn_over_torch_fps'], 2)}x frames/s, "
                     f"{_num(ref['learn_over_torch_rss'], 2)}x RSS")
    else:
        lines.append(f"   torch reference: not run ({ref['reason']})")
    est = r["estimate"]
    lines.append(f"   ESTIMATE for the real device (not measured): {est['gflop_per_frame']} GFLOP/frame at "
                 f"{est['compute_gflops']:g} GFLOP/s = {est['backbone_ms']} ms backbone "
                 f"({est['backbone_frames_per_s']} frames/s); target {est['target_latency_ms']:g} ms: "
                 f"{'within' if est['meets_target_latency'] else 'OVER'}")
    t = r["targets"]
    lines.append(f"   targets: predict >= 0.9 x backbone {_met(t['predict_over_backbone_ge_0_9'])}; learn >= 0.85 x "
                 f"backbone {_met(t['learn_over_backbone_ge_0_85'])}; 160 px int8 learn >= 0.75 x backbone "
                 f"{_met(t['learn_over_backbone_ge_0_75_160_int8'])}; learn CPU <= 1.15 x predict "
                 f"{_met(t['learn_cpu_le_1_15_predict'])}; camera p95 <= 66 ms {_met(t['camera_p95_le_66_ms'])}")
    lines.append(f"            learn >= 0.9 x predict {_met(t['learn_over_predict_ge_0_9'])}; learn >= 2 x torch "
                 f"{_met(t['learn_over_torch_fps_ge_2'])}; RSS <= 1/3 torch {_met(t['learn_over_torch_rss_le_third'])};"
                 f" Lite0-224 fp32 learn <= 100 MB {_met(t['learn_peak_rss_le_100_mb_lite0_224_fp32'])}")
    return lines


SUMMARY_COLUMNS = ("profile", "measured with", "backbone f/s", "predict f/s", "learn f/s", "predict/backbone",
                   "learn/backbone", "CPU ceiling predict; learn", "learn CPU/predict", "camera p95 ms", "learn peak MB", "anon + file MB",
                   "judged MB", "budget MB", "verdict", "cold start s", "torch f/s", "torch MB", "learn/torch",
                   "est. device ms")


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per profile (also the README's table)."""
    rows = []
    for r in report["results"]:
        m, ref = r["measured_with"], r["torch_reference"]
        at_peak = (r["learn_memory"] or {}).get("at_peak_mb") or {}
        split = f"{_num(at_peak.get('anon'))} + {_num(at_peak.get('file'))}" if at_peak else "n/a"
        rows.append((r["profile"], f"{m['resolution']} {m['precision']} {m['threads']}t", _num(r["backbone_frames_per_s"]),
                     _num(r["predict_frames_per_s"]), _num(r["learn_frames_per_s"]), _num(r["predict_over_backbone"], 2),
                     _num(r["learn_over_backbone"], 2), _ceilings(r["cpu_ceiling"]), _num(r["learn_cpu_over_predict"], 2),
                     _num(r["camera_rate"].get("p95_ms")), _num(r["learn_peak_rss_mb"]), split,
                     _num(r["memory_judged_mb"]), str(r["memory_budget_mb"]), r["memory_verdict"], _num(r["cold_start_s"], 2),
                     _num(ref.get("frames_per_s")), _num(ref.get("peak_rss_mb")), _num(ref.get("learn_over_torch_fps"), 2),
                     _num(r["estimate"]["backbone_ms"])))
    return rows


def _ceilings(ceiling: dict[str, Any]) -> str:
    """``cpu_ceiling`` in one cell: each command's ceiling at the backbone alone's load / with every core busy."""
    predict, learn = ceiling["predict_over_backbone"], ceiling["learn_over_backbone"]
    return (f"{_num(predict['same_load'], 2)}/{_num(predict['all_cores'], 2)}; "
            f"{_num(learn['same_load'], 2)}/{_num(learn['all_cores'], 2)}")


def markdown_table(report: dict[str, Any]) -> str:
    """The summary table in Markdown, for pasting into the README."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(report)]
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    """Per-profile blocks, then the summary table."""
    lines = [f"edgecvm {report['edgecvm']} bench: onnxruntime {report['onnxruntime']}, {report['cpu_count']} cores, "
             f"{report['frames']} frames of {report['stream']}"]
    for result in report["results"]:
        lines += ["", *profile_block(result)]
    rows = [SUMMARY_COLUMNS, *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines.append("")
    lines += ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
              for row in rows]
    lines.append("(CPU ceiling: the ratio to the backbone alone that each command's CPU per frame allows, keeping as "
                 "many cores busy as the backbone alone / every core; est. device ms: FLOPs-based ESTIMATE of the "
                 "backbone on the profile's real device; everything else measured here)")
    return "\n".join(lines)
