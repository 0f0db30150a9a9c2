"""The text encoder as a bundle part (``export --text-encoder``): sentence-transformers -> ONNX (+ int8).

Steps, each checked: the model must be the one that made the bundle's anchor
file (same probe embedding) and a plain Transformer -> mean Pooling ->
Normalize pipeline, the only one the device rebuilds; its transformer is
exported to ONNX (dynamic batch and length, token ids in, token states out);
``int8`` rewrites the weights of its matrix products as int8 with ONNX
Runtime's ``quantize_dynamic`` (activations are quantised per run, so no
calibration data is needed); then the device's own encoder
(``device.text_encoder``) embeds a sample of the anchor file's names and the
export fails when those anchors drift from sentence-transformers' beyond
``MIN_COSINE_MEAN`` / ``MIN_COSINE_MIN``. Figures: docs/text-encoder.md.

int8 choices, measured on the anchors of 64 Tiny-ImageNet names (7 templates
each) against sentence-transformers (fp32 ONNX: 91.0 MB, cosine 1.0000):

    per-channel int8, weight MatMuls and the embeddings   22.8 MB  cosine mean 0.9974, min 0.9961
    per-tensor int8, same                                  22.7 MB  cosine mean 0.9751, min 0.9564
    per-tensor uint8, same                                 22.7 MB  cosine mean 0.9910, min 0.9849
    per-channel int8, weight MatMuls only                  58.6 MB  cosine mean 0.9977, min 0.9966

Only MatMuls with a constant (weight) input are quantised
(``MatMulConstBOnly``): attention's activation x activation products stay
fp32; the embedding tables (Gather) are int8, which is most of the size.

The dummy input of the export has padding on purpose: with an all-ones
attention mask transformers skips building the mask, and the traced graph
then ignores it (measured: states off by up to 2.8 for every padded batch).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgecvm.device.concept_embedding import DESCRIPTION_WEIGHT, embed_names
from edgecvm.device.text_encoder import INPUTS, TextEncoder
from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import TEXT_ENCODER, TEXT_ENCODER_CONFIG, TOKENIZER
from edgecvm.formats.text_encoder_config import (
    TEXT_ENCODER_FORMAT,
    TEXT_ENCODER_VERSION,
    TextEncoderConfig,
    write_text_encoder_config,
)
from edgecvm.reporting import no_log

PRECISIONS = ("int8", "fp32")
PARITY_NAMES = 64  # anchor-file names (evenly spaced) embedded both ways at export
MIN_COSINE_MEAN = 0.99  # device anchors vs sentence-transformers' on those names
MIN_COSINE_MIN = 0.97
_PIPELINE = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
             "sentence_transformers.models.Normalize"]


def check_pipeline(model_folder: Path) -> None:
    """The device rebuilds Transformer -> mean pooling -> Normalize and nothing else; refuse other models."""
    try:
        modules = [m["type"] for m in json.loads((model_folder / "modules.json").read_text())]
        pooling = json.loads((model_folder / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{model_folder}: cannot read its modules.json / 1_Pooling/config.json ({exc}); "
                            "the text encoder needs a sentence-transformers folder") from None
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True)
    if modules != _PIPELINE or modes != ["pooling_mode_mean_tokens"]:
        raise BadInputError(f"{model_folder}: modules {modules}, pooling {modes}; the device text encoder "
                            "implements Transformer -> mean pooling -> Normalize only")


def _export_onnx(transformer, out: Path) -> None:
    import torch

    from edgecvm.offline.export import MIN_OPSET, _exporter_quiet

    class TokenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.net(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state

    ids = torch.full((2, 8), 1000, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding: see the module docstring
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=transformer.config.max_position_embeddings)
    with torch.no_grad(), _exporter_quiet():
        torch.onnx.export(TokenStates().eval(), (ids, mask, torch.zeros_like(ids)), str(out), input_names=list(INPUTS),
                          output_names=["token_states"], dynamic_shapes=({0: batch, 1: length},) * 3,
                          opset_version=MIN_OPSET, dynamo=True, external_data=False, verbose=False)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown --text-encoder {precision!r}; choose one of {', '.join(PRECISIONS)}")


def _parity_names(anchors: AnchorSet) -> list[str]:
    picks = np.linspace(0, len(anchors) - 1, min(PARITY_NAMES, len(anchors))).round().astype(int)
    return [anchors.names[i] for i in dict.fromkeys(picks.tolist())]


def export_text_encoder(folder: Path, anchors: AnchorSet, precision: str,
                        log: Callable[[str], None] = no_log) -> list[str]:
    """Write ``TEXT_ENCODER_FILES`` into ``folder`` (an export's work folder); returns their names."""
    from edgecvm.offline.text_encoder import PROBE_MATCH
    from edgecvm.offline.text_encoder import TextEncoder as SentenceEncoder

    check_precision(precision)
    reference = SentenceEncoder(anchors.model)
    if reference.dim != anchors.dim or anchors.model_probe is None or \
            float(reference.probe() @ anchors.model_probe) < PROBE_MATCH:
        raise BadInputError(f"the anchor file was made by {anchors.model} ({anchors.dim}-d) and carries no probe of "
                            f"{reference.model_id}, or another one: the text encoder must be the model that made the "
                            "anchors; rebuild them with `edgecvm anchors build`")
    check_pipeline(reference.path)
    transformer = reference.sentence_transformer[0]
    fp32 = folder / (f".{TEXT_ENCODER}.fp32" if precision == "int8" else TEXT_ENCODER)
    log(f"text encoder: exporting {reference.model_id} to ONNX ({precision})")
    _export_onnx(transformer.auto_model.eval(), fp32)
    fp32_bytes = fp32.stat().st_size
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = folder / f".{TEXT_ENCODER}.prepared"
        # Graph optimisation first, as ORT's quantiser asks; symbolic shape inference cannot follow the
        # attention mask's shape arithmetic and is skipped (ONNX shape inference still runs).
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(folder / TEXT_ENCODER), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"MatMulConstBOnly": True})
        fp32.unlink()
        prepared.unlink()
    shutil.copyfile(reference.path / TOKENIZER, folder / TOKENIZER)
    config = TextEncoderConfig(
        format=TEXT_ENCODER_FORMAT, version=TEXT_ENCODER_VERSION, model=anchors.model, dim=anchors.dim,
        max_seq_length=int(transformer.max_seq_length), pooling="mean", normalize=True,
        description_weight=DESCRIPTION_WEIGHT, precision=precision,  # type: ignore[arg-type]
        onnx_bytes=(folder / TEXT_ENCODER).stat().st_size, fp32_bytes=fp32_bytes)
    write_text_encoder_config(folder / TEXT_ENCODER_CONFIG, config)
    names = _parity_names(anchors)
    with TextEncoder(folder) as device:
        got = embed_names(names, [""] * len(names), device.encode, anchors.templates)
    want = embed_names(names, [""] * len(names), reference.encode, anchors.templates)
    cosine = np.sum(got * want, axis=1)
    parity = {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()), "names": len(names)}
    log(f"text encoder: {fp32_bytes / 1e6:.1f} MB fp32 -> {config.onnx_bytes / 1e6:.1f} MB {precision}; anchors of "
        f"{len(names)} names vs sentence-transformers: cosine mean {parity['cosine_mean']:.4f}, "
        f"min {parity['cosine_min']:.4f}")
    if not (parity["cosine_mean"] >= MIN_COSINE_MEAN and parity["cosine_min"] >= MIN_COSINE_MIN):
        raise BadInputError(f"the ONNX text encoder's anchors agree with sentence-transformers' at cosine mean "
                            f"{parity['cosine_mean']:.4f}, min {parity['cosine_min']:.4f} (need >= {MIN_COSINE_MEAN}, "
                            f">= {MIN_COSINE_MIN}); export it with --text-encoder fp32")
    write_text_encoder_config(folder / TEXT_ENCODER_CONFIG, TextEncoderConfig(**{**asdict(config), "parity": parity}))
    return [TEXT_ENCODER, TOKENIZER, TEXT_ENCODER_CONFIG]
