# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Every target installs what it needs into .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BUILD   := export/build
DEMO    := $(BUILD)/demo

.PHONY: setup test demo lint bench bench-serve bench-vocabulary eval eval-21k eval-folder anchors-21k fleet soak clean

setup: $(STAMP)

# torch is installed on its own, pinned, before the extras: a resolver that is
# free to pick torch pulls the newest CUDA build (GBs) instead of the CPU wheel.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,camera,plots,serve,dev]'
	touch $(STAMP)

# --durations: the slowest tests, in the log of every run (make test must stay under 15 minutes)
test: setup
	$(BIN)/python -m pytest -q --durations=12

lint: setup
	$(BIN)/ruff check edgecvm tests

demo: setup
	$(BIN)/python -m edgecvm.cli.demo --out $(DEMO)

clean:
	rm -rf $(BUILD) .cache .pytest_cache

# Benchmarks (~5 min on 2 cores): every device profile measured on this machine by `edgecvm bench`,
# with a 224 px fp32 and a 160 px int8 bundle (each profile takes the closest to what it asks), on
# camera-sized frames (the sample at 640x480 and as a 30 frames/s video, written once to ~/.cache/edgecvm/bench).
# The table goes to stdout, the same numbers to export/build/bench.json (keys in docs/benchmarks.md).
# learn runs the gradient head (sgd), the one the torch reference loop mirrors; the default head (lda) is
# measured with `edgecvm bench --profile host` (docs/benchmarks.md).
BENCH_BUNDLES := $(BUILD)/lite0-224 $(BUILD)/lite0-160-int8
ANCHORS       := tiny-imagenet-200

bench: setup $(addsuffix /manifest.json,$(BENCH_BUNDLES))
	$(BIN)/edgecvm bench $(addprefix --bundle ,$(BENCH_BUNDLES)) --all-profiles --repeat 3 --head-method sgd \
		--json $(BUILD)/bench.json

# `edgecvm serve` with one page open against `edgecvm learn` on the same stream (~4 min on 2 cores): learning
# frames/s on the host and peak RSS on the Pi Zero 2 W profile, one JSON line per round and a summary (docs/serve.md).
bench-serve: setup $(addsuffix /manifest.json,$(BENCH_BUNDLES))
	$(BIN)/python tests/serve/bench_serve.py --bundle $(BUILD)/lite0-224 --profile host --repeat 3 --copies 2
	$(BIN)/python tests/serve/bench_serve.py --bundle $(BUILD)/lite0-160-int8 --profile raspberry-pi-zero-2w \
		--repeat 3 --copies 2

# `edgecvm predict --vocab all` with the 21,843 ImageNet-21k anchors against the 200 Tiny-ImageNet ones, side by side
# (~3 min on 2 cores): frames/s, peak RSS, the decision's ms per frame and the memory plans (docs/benchmarks.md).
bench-vocabulary: setup $(BUILD)/lite0-224/manifest.json $(BUILD)/lite0-224-21k/manifest.json
	$(BIN)/python tests/bench/bench_vocabulary.py --bundle $(BUILD)/lite0-224 --bundle-21k $(BUILD)/lite0-224-21k \
		--profile host --repeat 3

$(BUILD)/lite0-224-21k/manifest.json: | $(STAMP)
	$(BIN)/edgecvm export --recipe lite0-224 --anchors imagenet-21k --out $(BUILD)/lite0-224-21k

$(BUILD)/lite0-224/manifest.json: | $(STAMP)
	$(BIN)/edgecvm export --recipe lite0-224 --anchors $(ANCHORS) --out $(BUILD)/lite0-224

$(BUILD)/lite0-160-int8/manifest.json: | $(STAMP)
	$(BIN)/edgecvm export --recipe lite0-160 --anchors $(ANCHORS) --out $(BUILD)/lite0-160-int8 \
		--quantize int8 --calibration edgecvm/resources/samples/tiny10/train

# Long reliability runs (~15 min on 2 cores): 100,000 frames through `learn` with RSS
# at start/middle/end (growth <= 5 %), then the reliability suite with 60 power-loss
# trials and deeper fuzzing. atheris is optional: its fuzz target skips without it.
soak: setup
	-$(BIN)/pip install --quiet atheris
	$(BIN)/python tests/reliability/soak.py --frames 100000
	EDGECVM_POWER_TRIALS=60 EDGECVM_FUZZ_EXAMPLES=2000 EDGECVM_ATHERIS_RUNS=200000 \
		$(BIN)/python -m pytest -q -s tests/reliability

# Continual-learning evaluation (figures and timings in docs/results.md): CVM against NCM, SLDA,
# softmax (+ replay) and joint training on the same cached Lite0 features, 10 tasks x 20 classes, one pass.
# The first run extracts the features of the 50,000 images into ~/.cache/edgecvm (or $XDG_CACHE_HOME/edgecvm; ~7 min on 2 cores).
EVAL_DATA ?= ../shared/data/tiny-imagenet-200-subset.zip

eval: setup $(BUILD)/lite0-224/manifest.json
	$(BIN)/edgecvm eval --bundle $(BUILD)/lite0-224 --data $(EVAL_DATA) --scenario class-incremental --tasks 10 \
		--seed 0 --methods cvm,cvm-noreplay,ncm,slda,softmax,softmax-replay,joint \
		--json $(BUILD)/eval.json --plot $(BUILD)/eval-class-incremental.png

# Zero-shot among all 21,843 ImageNet-21k concepts on the Tiny-ImageNet val images, an image counting when the answer
# is its own WordNet id, next to the bundle's 200-way figure (docs/results.md; ~1 min once the features are cached).
WNIDS_21K ?= ../shared/data/imagenet-21k-concepts.tsv

eval-21k: setup $(BUILD)/lite0-224/manifest.json
	$(BIN)/edgecvm eval --bundle $(BUILD)/lite0-224 --data $(EVAL_DATA) --scenario zero-shot --anchors imagenet-21k \
		--wordnet-ids $(WNIDS_21K) --json $(BUILD)/eval-21k.json

# Rebuild the shipped 21k anchor file (deterministic; ~13 CPU-minutes, so it ships in the package instead).
anchors-21k: setup
	nice $(BIN)/edgecvm anchors build --concepts edgecvm/resources/anchors/imagenet-21k.tsv --dtype int8 \
		--out edgecvm/resources/anchors/imagenet-21k.anchors.npz

# "How many examples do I need?" on a folder of class folders (docs/results.md): 25 Tiny-ImageNet classes written
# as photos25/<everyday_name>/ by tools/make_folder_dataset.py, every method at K = 1, 2, 5, 10, 20 training images
# per class. On a busy 2-core VM: 11 min the first time (feature extraction), under 4 min from the cache.
PHOTOS := $(BUILD)/photos25

eval-folder: setup $(BUILD)/lite0-224/manifest.json $(PHOTOS)
	$(BIN)/edgecvm eval --bundle $(BUILD)/lite0-224 --data $(PHOTOS) --scenario few-shot --seed 0 \
		--methods cvm,cvm-noreplay,ncm,slda,softmax,softmax-replay,joint \
		--json $(BUILD)/eval-folder.json --plot $(BUILD)/eval-few-shot-curve.png

$(PHOTOS): | $(STAMP)
	rm -rf $@.tmp
	$(BIN)/python tools/make_folder_dataset.py $(EVAL_DATA) $@.tmp
	mv $@.tmp $@

# The exact merge at fleet size (docs/deploy.md, section 5; ~50 min on 2 shared cores): the training images split
# over 20 and 200 devices (each class on one device, and dealt at random), merged, against one learner taught every
# image; then the product head taught as on a device, 50 classes over 10 devices; then one Flower round in the
# Simulation Engine over 20 and 200 devices' state dirs (round time, memory, bytes uploaded, equality), and its
# peer, Flower's FedAvg over sgd heads on 20 devices for 10 rounds. Needs the evaluation's features (make eval).
# One JSON line per case, also in export/build/fleet.json, fleet-flower.json and fleet-fedavg.json.
fleet: setup $(BUILD)/lite0-224/manifest.json
	$(BIN)/python tests/learning/bench_merge.py --bundle $(BUILD)/lite0-224 --data $(EVAL_DATA) --devices 20 200 \
		--taught 50 10 --json $(BUILD)/fleet.json
	$(BIN)/python tests/fleet/bench_fleet.py --bundle $(BUILD)/lite0-224 --data $(EVAL_DATA) --devices 20 200 \
		--json $(BUILD)/fleet-flower.json
	$(BIN)/python tests/fleet/bench_fedavg.py --bundle $(BUILD)/lite0-224 --data $(EVAL_DATA) --devices 20 \
		--rounds 10 --json $(BUILD)/fleet-fedavg.json
