# segcli — the two set-up commands: `make demo` and `make test` (each works on a fresh machine).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo-output

.PHONY: install demo test test-slow lint format bench bench-metrics bench-inference bench-train lecture hippocampus clean
.PHONY: bench-precision time-to-dice
.PHONY: bench-resampling readme
.PHONY: bench-report report-screenshot
.PHONY: plan-docs plan-hippocampus
.PHONY: bench-scale bench-cache-formats bench-hippocampus-cache study-lecture study-hippocampus
.PHONY: small-data
.PHONY: docs
.PHONY: bench-augment

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## synth → train (short schedule) → predict → evaluate → metric summary, on toy data
demo: install
	rm -rf $(DEMO)
	$(BIN)/segcli synth $(DEMO)/train --dims 2 --cases 300 --seed 0
	$(BIN)/segcli synth $(DEMO)/test --dims 2 --cases 60 --seed 1
	$(BIN)/segcli receptive-field experiments/toy-dilated.yaml
	$(BIN)/segcli train experiments/toy-dilated.yaml --set data.root=$(DEMO)/train --set output=$(DEMO)/runs --set train.epochs=10
	$(BIN)/segcli predict experiments/toy-dilated.yaml --set output=$(DEMO)/runs --input $(DEMO)/test/imagesTr --output $(DEMO)/pred
	$(BIN)/segcli evaluate experiments/toy-dilated.yaml --pred $(DEMO)/pred --ref $(DEMO)/test/labelsTr --output $(DEMO)/metrics.csv --overlays $(DEMO)/overlays --images $(DEMO)/test/imagesTr
	$(BIN)/segcli report $(DEMO)/metrics.csv -o $(DEMO)/report.html
	@echo "demo done: open $(DEMO)/report.html in a browser to look at the results"

## lint, format check and the test suite without `slow` tests (the CI command); the ONNX
## export test needs the `export` extra (CPU wheels of onnx, onnxruntime, onnxscript)
$(VENV)/.test-stamp: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,export]'
	@touch $@

test: $(VENV)/.test-stamp
	$(BIN)/ruff check segcli tests bench
	$(BIN)/ruff format --check segcli tests bench
	$(BIN)/python -m pytest -q

## the long real-training tests (marked slow) that `make test` leaves out
test-slow: $(VENV)/.test-stamp
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check segcli tests bench

format: install
	$(BIN)/ruff check --fix segcli tests bench
	$(BIN)/ruff format segcli tests bench

## docs/spec.md: every spec key (type, default, meaning) and every file segcli writes, generated
## from the schema and the writers; tests/config/test_spec_reference.py fails when it is stale
docs: install
	$(BIN)/python -m segcli.engine.reference docs/spec.md

clean:
	rm -rf $(DEMO) .pytest_cache

## benchmarks against MONAI / MedPy; results go to docs/benchmarks.md
$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: bench-metrics bench-inference bench-train bench-precision

bench-metrics: $(VENV)/.bench-stamp
	$(BIN)/python bench/metrics.py

bench-inference: $(VENV)/.bench-stamp
	$(BIN)/python bench/inference.py

bench-train: $(VENV)/.bench-stamp
	$(BIN)/python bench/train.py

## segcli report: 52 3D cases with overlays (size, time) and 1,000 cases in Chromium (load, sort)
bench-report: install
	$(BIN)/python bench/report.py

## the README's report screenshot (docs/img/report.png), from the tour's own steps
report-screenshot: install
	$(BIN)/python bench/report_screenshot.py

## the lecture's experiments (docs/lecture.md) and the real-data result (docs/results.md)
lecture: install
	$(BIN)/python bench/lecture.py

hippocampus: $(VENV)/.bench-stamp
	$(BIN)/python bench/hippocampus.py

## segcli plan: the plans of five datasets (docs/plan.md) and the Hippocampus budget run
plan-docs: install
	$(BIN)/python bench/plan.py docs

plan-hippocampus: install
	$(BIN)/python bench/plan.py hippocampus --budget-minutes $(or $(PLAN_BUDGET_MINUTES),10)

## label resampling round trip over the shared hippocampus cases → docs/nnunet.md
bench-resampling: install
	$(BIN)/python bench/resampling.py

## rerun the README tour's commands and write their real output (and figures) into README.md
readme: install
	$(BIN)/python bench/readme.py

## precision × layout step times and CT-sized inference (docs/benchmarks.md; ~30 min quiet)
bench-precision: $(VENV)/.bench-stamp
	$(BIN)/python bench/precision.py

## Hippocampus time-to-Dice, segcli (fp32, bf16) vs MONAI, bf16 accuracy (docs/results.md; ~45 min)
time-to-dice: $(VENV)/.bench-stamp
	$(BIN)/python bench/time_to_dice.py

## preprocessing, cached start-up and train memory for 4/16/64 CT-like cases (beside nnU-Net v2)
## and predict memory of 512×512×100/500 volumes (docs/benchmarks.md; long: run it on an idle
## machine; tens of GB in a temporary folder, BENCH_SCALE_ARGS="--tmp DIR" puts it elsewhere)
bench-scale: $(VENV)/.bench-stamp
	$(BIN)/python bench/scale.py $(BENCH_SCALE_ARGS)

## nnU-Net's augmentation on the CPU: backends, ms per transform at Hippocampus and CT patch
## sizes, and whether 2 loader workers keep up with Hippocampus training (docs/benchmarks.md; ~4 min)
bench-augment: $(VENV)/.bench-stamp
	$(BIN)/python bench/augment_cost.py

## the preprocessing cache's on-disk format: npy vs blosc2 vs zarr (docs/benchmarks.md)
bench-cache-formats: $(VENV)/.bench-stamp
	$(BIN)/python bench/cache_formats.py --cases 3

## Hippocampus through the old data path and the preprocessing cache: same batches? start-up
bench-hippocampus-cache: install
	$(BIN)/python bench/hippocampus_cache.py

## segcli study on the lecture's comparisons (docs/studies.md; ~10 min)
study-lecture: install
	$(BIN)/python bench/studies.py lecture

## Hippocampus variants on 3 folds within a CPU budget, fold ensemble vs one fold (docs/studies.md)
study-hippocampus: install
	$(BIN)/python bench/studies.py hippocampus --budget-minutes $(or $(STUDY_BUDGET_MINUTES),30)

## Hippocampus with 10/20/40 training cases: no augmentation, today's set, the nnunet preset;
## fine-tuning from the other half against scratch (docs/results.md; ~50 min on 2 cores;
## SMALL_DATA_ARGS="--epochs 32" for a longer budget)
small-data: install
	$(BIN)/python bench/small_data.py $(SMALL_DATA_ARGS)
