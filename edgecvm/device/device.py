"""A device: one bundle, one profile and one learner, opened together and verified.

``open_device`` loads in an order that fails fast and cheap: the profile, the
bundle (every sha256 verified), the head and anchors it carries (and the names
the state dir added, new_concepts.py), the learner
(resumed from a state dir, fresh, or the bundle's initial head), then checks
the memory plan against the profile's budget (``BudgetExceededError`` with the
table) *before* the ONNX Runtime session, the one big allocation, is created.

The ``Device`` it returns is what a program talks to: teach an image or a
feature vector as a concept, predict, checkpoint, close. It is a context
manager; closing it checkpoints what was taught since the last checkpoint.
The CLI commands and the learn loop (learn_loop.py) run on the same object.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from edgecvm.device import process_tuning
from edgecvm.device.frame_size import CAPTURE_SIZE, checked_frame_size
from edgecvm.device.image_files import DecodeSize, decode_image, to_rgb
from edgecvm.device.memory_plan import MemoryPlan, plan_for_learner
from edgecvm.device.new_concepts import clean_name, embed_new_names, load_new_concepts, save_new_concepts
from edgecvm.device.pipeline import FramePipeline
from edgecvm.device.profiles import DeviceProfile, learner_config, load_profile
from edgecvm.device.runtime import FeatureExtractor
from edgecvm.device.state import Checkpointer, StateIdentity, load_state
from edgecvm.device.streams import Frame, Stream, open_stream
from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import Bundle, load_bundle, load_head_and_anchors
from edgecvm.learning.learner import Learner, Prediction, UpdateResult, Vocab

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
"""A file path, a PIL image, or an (H, W, 3) uint8 RGB array (a camera frame)."""

STALE_FRAME_S = 0.1
"""A live frame waiting this long for ``predict_stream``'s loop is replaced by the camera's newest: three frames of
a 30 frames/s camera, so a loop that keeps up with the camera is never made to wait for a replacement."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One frame of a stream and what the device answered (``Device.predict_stream``)."""

    frame: Frame
    prediction: Prediction | None  # None: the frame could not be read, ``frame.error`` says why
    latency_s: float | None  # from the frame's arrival at a live source to this answer; None for a file's frame


@dataclasses.dataclass
class Device:
    """An opened device (from ``open_device``): the verified bundle and profile, the learner and the backbone.

    Not thread-safe: one thread teaches and predicts (``LearnLoop`` hands updates to its own worker and waits).
    """

    bundle: Bundle
    profile: DeviceProfile
    learner: Learner
    identity: StateIdentity
    plan: MemoryPlan
    extractor: FeatureExtractor
    state_dir: Path | None = None  # where checkpoints go; None: the learner lives in memory only
    read_only: bool = False  # opened to predict: teaching and checkpoints are refused
    checkpointer: Checkpointer | None = None
    new_concepts: AnchorSet | None = None  # names embedded on this device (new_concepts.py), after the bundle's
    tuned: bool = False  # opened with tune_process: the process's pages may be trimmed after a big allocation
    frame_size: tuple[int, int] = CAPTURE_SIZE  # (width, height) the memory plan counts; a camera is asked for it

    # ---- teaching -------------------------------------------------------------------------------

    def teach(self, image: ImageInput, concept: str) -> UpdateResult:
        """Teach one image as an example of ``concept``: a name in the anchor file, or a new one when the bundle
        carries the text encoder (see ``add_concepts``)."""
        return self.teach_features(self.features(image), [concept])

    def add_concepts(self, names: Sequence[str], descriptions: Sequence[str] | None = None) -> list[str]:
        """Give the names that are not in the anchor file a place in concept space; returns those added.

        Embedded by the bundle's text encoder (``edgecvm export --text-encoder``) with the anchor file's
        templates, plus ``descriptions[i]`` when given (homonyms), and kept in the state dir. Without the
        encoder, an unknown name is a ``BadInputError`` listing close names; ``BudgetExceededError`` when the
        profile's budget cannot hold the encoder.
        """
        names = list(names)
        glosses = [" ".join(str(d).split()) for d in descriptions] if descriptions is not None else [""] * len(names)
        if len(glosses) != len(names):
            raise BadInputError(f"{len(names)} concept names but {len(glosses)} descriptions")
        missing: dict[str, tuple[str, str]] = {}
        for name, gloss in zip(names, glosses, strict=True):
            if name not in self.learner.anchors:  # the check every taught frame pays: a dict lookup
                clean = clean_name(name)
                missing.setdefault(clean.casefold(), (clean, gloss))
        if not missing:
            return []
        self._check_writable("add concepts")
        added_names, added_glosses = zip(*missing.values(), strict=True)
        added = embed_new_names(self.bundle, self.profile, self.plan, self.learner.anchors, added_names,
                                added_glosses, release_pages=self.tuned)
        own = added if self.new_concepts is None else self.new_concepts.extended(added)
        if self.state_dir is not None:
            save_new_concepts(self.state_dir, own)
        self.new_concepts = own
        self.learner.anchors = self.learner.anchors.extended(added)
        return list(added_names)

    def teach_features(self, features: np.ndarray, concepts: Sequence[str] | str) -> UpdateResult:
        """Teach backbone features, (F,) or (n, F), labelled with one concept or one per row.

        Checkpoints every ``checkpoint_every`` updates (the profile's unless
        given at open), as ``edgecvm learn`` does.
        """
        self._check_writable("teach")
        rows = np.atleast_2d(features)
        labels = [concepts] * rows.shape[0] if isinstance(concepts, str) else list(concepts)
        self.add_concepts(labels)
        result = self.learner.observe_features(rows, labels)
        if self.checkpointer is not None:
            self.checkpointer.maybe_checkpoint()
        return result

    # ---- predicting -----------------------------------------------------------------------------

    def predict(self, image: ImageInput, top_k: int = 5, vocab: Vocab | None = None) -> Prediction:
        """The nearest concept for one image, with its cosine score and the ``top_k`` best; ``unknown`` (and
        ``prediction.unknown``) when the image is none of the taught concepts (``open_device(unknown=...)``).

        ``vocab``: "known" answers among the taught concepts, "all" among every
        concept of the anchor file (zero-shot); default: known once something
        has been taught, else all.
        """
        return self.predict_features(self.features(image), top_k, vocab)[0]

    def predict_features(self, features: np.ndarray, top_k: int = 5, vocab: Vocab | None = None) -> list[Prediction]:
        return self.learner.predict_features(features, top_k, vocab or self.default_vocab)

    def predict_stream(self, stream: Stream, top_k: int = 5, vocab: Vocab | None = None,
                       max_frame_age_s: float | None = STALE_FRAME_S) -> Iterator[Answer]:
        """Answer every frame of ``stream`` as ``edgecvm predict`` does, in order.

        The next frame is decoded and preprocessed on a worker thread while
        the backbone runs on this one (pipeline.py), so a camera-sized frame
        costs little more than the model; a live camera is answered on its
        newest frame, never from a queue of old ones. That frame is read as
        the loop takes the answer before it; when the loop worked so long
        that it is older than ``max_frame_age_s`` and the camera has a newer
        one, the newer one is answered instead (the loop waits one decode
        for it; None keeps every frame read). ``latency_s`` says how old each
        answer is. Leaving the loop (a ``break``, an exception, the iterator's
        ``close()``) stops the worker.
        """
        with FramePipeline(stream, self.extractor.preprocess, max_frame_age_s) as pipeline:
            for item in pipeline:
                if item.batch is None:
                    yield Answer(item.frame, None, None)
                    continue
                prediction = self.predict_features(self.extractor.run(item.batch), top_k, vocab)[0]
                yield Answer(item.frame, prediction, item.frame.age_s())

    @property
    def default_vocab(self) -> Vocab:
        return "known" if self.learner.known else "all"

    @property
    def known(self) -> list[str]:
        """The taught concepts, in teaching order."""
        return list(self.learner.known)

    def features(self, image: ImageInput) -> np.ndarray:
        """(1, F) backbone features of one image."""
        return self.extractor.extract([load_image(image, self.extractor.preprocess.decode_size)])

    # ---- persistence ----------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write the state now (atomically; the previous file is kept). False, after a logged warning, when the
        write failed (disk full, read-only card): the state on disk is then the last good one."""
        self._check_writable("checkpoint")
        if self.checkpointer is None:
            raise BadInputError("this device was opened without a state dir, so there is nowhere to checkpoint to; "
                                "open it with a state dir")
        return self.checkpointer.checkpoint()

    def close(self) -> None:
        """Checkpoint what was learned since the newest checkpoint, if anything."""
        if self.checkpointer is not None and self.checkpointer.unsaved:
            self.checkpointer.checkpoint()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self, action: str) -> None:
        if self.read_only:
            raise BadInputError(f"cannot {action}: this device was opened read-only (to predict)")

    # ---- frames -----------------------------------------------------------------------------------

    def open_stream(self, spec: str, **options: Any) -> Stream:
        """``streams.open_stream`` as this device reads frames: a large JPEG decoded no larger than its model
        needs (``Preprocessor.decode_size``), a camera asked for the frame size its memory plan counts.
        ``options``: ``open_stream``'s others (``every``, ``limit``, ``shuffle``, ``loop``, ``realtime``, ...)."""
        return open_stream(spec, decode_size=self.extractor.preprocess.decode_size, capture_size=self.frame_size,
                           **options)

    def unknown_labels(self, stream: Stream) -> list[tuple[str, BadInputError]]:
        """The labels a file source will give that are not concepts of the anchor file, each with its error
        (which lists close names)."""
        unknown = []
        for label in stream.labels:
            try:
                self.learner.anchors.index_of(label)
            except BadInputError as exc:
                unknown.append((label, exc))
        return unknown


def load_image(image: ImageInput, decode_size: DecodeSize | None = None) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an (H, W, 3) uint8 array; ``BadInputError`` naming what is wrong.
    ``decode_size``: as for ``decode_image`` (a path's JPEG is decoded no larger than the device needs)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError(f"an image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return Image.fromarray(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        decoded, error = decode_image(data, decode_size)
        if decoded is None:
            raise BadInputError(f"{path}: {error}")
        return decoded
    raise BadInputError(f"expected an image path, a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")


def open_device(
    bundle: str | os.PathLike[str],
    profile: str | os.PathLike[str] = "host",
    state: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
    head_method: str | None = None,
    checkpoint_every: int | None = None,
    tune_process: bool = False,
    unknown: bool = True,
    unknown_tpr: float | None = None,
    frame_size: tuple[int, int] = CAPTURE_SIZE,
) -> Device:
    """Open a bundle on a device profile, with the learner resumed from (or created in) the ``state`` dir.

    ``profile``: a shipped profile's name (``edgecvm profiles list``) or a YAML
    path. ``state``: a dir that is created on the first checkpoint and resumed
    afterwards; None keeps what is taught in memory only. ``read_only``: to
    predict from a state without ever writing it (it must exist). ``head_method``:
    "lda" (default) or "sgd"; fixed once a state exists. ``tune_process``:
    apply the process-wide settings of process_tuning.py (the CLI does; they
    change the whole host process, so a program embedding edgecvm opts in).
    ``unknown``: answer "unknown" for a frame judged none of the taught concepts,
    accepting ``unknown_tpr`` of the frames of taught ones (default: the profile's
    ``unknown_tpr``); False: always a taught concept (learning/open_set.py).
    ``frame_size``: (width, height) of the frames the device will be given (a
    camera's capture size), as the memory plan counts them.
    """
    frame_size = checked_frame_size(frame_size, "frame_size")  # before the process is changed
    # First, before any large buffer is freed: glibc raises its mmap threshold to the size of each large block
    # freed (reading the bundle frees 1-9 MB blocks), after which ORT's activations would come from the heap and
    # stay resident. ``heap_trimmed`` is what the memory plan counts on.
    tuning = process_tuning.tune_process() if tune_process else None
    heap_trimmed = tuning is not None and tuning.heap_trimmed
    profile_ = load_profile(str(profile))
    bundle_ = load_bundle(str(bundle))
    head, anchors = load_head_and_anchors(bundle_)
    own = load_new_concepts(state, anchors)
    if own is not None:
        anchors = anchors.extended(own)
    identity = StateIdentity.of_bundle(bundle_)
    config = learner_config(profile_, method=head_method, unknown=unknown, unknown_tpr=unknown_tpr)
    if state is None:
        learner = Learner(head, anchors, config)
    else:
        learner = load_state(state, head, anchors, identity, config, fresh_if_empty=not read_only)
    plan = plan_for_learner(profile_, bundle_.backbone_bytes, bundle_.manifest.input_size, learner,
                            learning=not read_only, frame_size=frame_size, heap_trimmed=heap_trimmed)
    plan.check(profile_)
    if tuning:
        process_tuning.release_clean_file_pages()  # import-time code: lowers the base that the session's transient peak stands on
    extractor = FeatureExtractor(bundle_, profile_, spinning=False)  # runtime.py: Spinning
    extractor.warm_up()
    if tuning:
        process_tuning.release_clean_file_pages()  # the graph parser and optimiser and first-run paths, never run again
    learner.extractor = extractor
    checkpointer = None
    if state is not None and not read_only:
        every = checkpoint_every if checkpoint_every is not None else profile_.checkpoint_every
        checkpointer = Checkpointer(state, learner, identity, every)
    return Device(bundle_, profile_, learner, identity, plan, extractor, None if state is None else Path(state),
                  read_only, checkpointer, own, tuning is not None, frame_size)

