# RealCam: every target installs what it needs into .venv/ on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export HF_HUB_DISABLE_TELEMETRY := 1

SAMPLE ?= data/sample
OUT ?= outputs/sample_annotation
CLIPS ?= 8
FRAMES ?= 28
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the exact tested set (constraints.txt); torch first: on the dev/CI machines 2.13.0 is a local CPU wheel
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# deepspeed is source-only; without --no-build-isolation its build pulls an unpinned CUDA torch
	DS_BUILD_OPS=0 $(PY) -m pip install -q -c constraints.txt --no-build-isolation deepspeed
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its pinned dependencies

test: $(STAMP) ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, and the import layering contracts of pyproject.toml (lint-imports)
	$(VENV)/bin/ruff check annotate train eval tests
	$(VENV)/bin/lint-imports

sample: $(STAMP) ## render the default synthetic sample into data/sample (skipped if present)
	@if [ -f $(SAMPLE)/manifest.csv ]; then echo "sample present: $(SAMPLE)"; else \
	  $(PY) -m annotate synth $(SAMPLE) --clips $(CLIPS) --frames $(FRAMES); fi

annotate: sample ## annotation job on a local Ray over the sample (MANIFEST=... OUT=... to change)
	$(PY) -m annotate run $(or $(MANIFEST),$(SAMPLE)/manifest.csv) $(OUT) $(ARGS)
	$(PY) -m annotate report $(OUT)

report: $(STAMP) ## annotation report of OUT
	$(PY) -m annotate report $(OUT)

bench-annotate: $(STAMP) ## CPU-s per frame and scale errors, keyframes vs sequential pipeline -> bench/annotate.json
	@case "$(ARGS)" in *--colmap-cli*) command -v colmap >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq colmap >/dev/null; } || \
	  echo "Debian's colmap is not installed: the reference chain is skipped";; esac
	$(PY) -m annotate.bench_clip --out bench/annotate.json $(ARGS)

bench-job: sample ## clips per hour of the Ray job on the sample -> bench/annotate_job.json
	$(PY) -m annotate.bench_job --sample $(SAMPLE) --json bench/annotate_job.json $(ARGS)

bench-extract: $(STAMP) ## frames cut per second from a long 720p video (annotate extract) -> bench/extract.json
	$(PY) -m annotate.bench_extract --out bench/extract.json $(ARGS)

bench-backbone: $(STAMP) ## forward/backward time and peak memory of the full 256 UNet -> bench/backbone.json
	$(PY) -m train.bench_backbone --out bench/backbone.json $(ARGS)

bench-gpu: $(STAMP) ## one GPU, < 8 min: depth images/s, 256 RealCam training step, DDIM s/video -> bench/gpu.json
	$(PY) -m train.bench_gpu --out bench/gpu.json $(ARGS)

bench-train: $(STAMP) ## trainer samples/s and peak memory, with and without cached latents -> bench/train.json
	@[ -d $(OUT)/clips ] || $(MAKE) annotate ARGS=
	$(PY) -m train.bench_train --out bench/train.json $(ARGS)

bench-eval: $(STAMP) ## video-trials per CPU-hour of `eval run` and the full protocol's cost -> bench/eval.json
	$(PY) -m eval.bench_eval --out bench/eval.json $(ARGS)

train: $(STAMP) ## RealCam-I2V 256 on 8xH100 (DeepSpeed ZeRO-1, fp16); CONFIG=... ARGS="key=value ..."
	$(VENV)/bin/accelerate launch --config_file train/configs/accelerate_8xh100.yaml -m train --config $(or $(CONFIG),train/configs/realcam_256_8xh100.yaml) $(ARGS)

check-assets: $(STAMP) ## check a trainer preset's inputs (data, checkpoint, tokenizer) without starting it: CONFIG=... ARGS=...
	$(PY) -m train --check --config $(or $(CONFIG),train/configs/realcam_256_8xh100.yaml) $(ARGS)

train-tiny: $(STAMP) ## tiny preset on the CPU over the sample annotations (runs `make annotate` if needed)
	@[ -d $(OUT)/clips ] || $(MAKE) annotate ARGS=
	$(PY) -m train --config train/configs/tiny.yaml data.annotation_dir=$(OUT) data.manifest=$(SAMPLE)/manifest.csv $(ARGS)

EVAL_OUT ?= outputs/eval
EVAL_TINY := $(findstring --tiny,$(ARGS))
eval: $(STAMP) ## generate the test set, score it, Table 1 -> $(EVAL_OUT); ARGS="--tiny": end to end on the sample
	@[ -z "$(EVAL_TINY)" ] || [ -n "$(ANNOTATIONS)" ] || [ -d $(OUT)/clips ] || $(MAKE) annotate ARGS=
	$(PY) -m eval generate --annotations $(or $(ANNOTATIONS),$(OUT)) \
	  --manifest $(or $(MANIFEST),$(SAMPLE)/manifest.csv) --out $(EVAL_OUT)/exp $(ARGS)
	# the tiny model's random videos rarely give a reconstruction: there a run without successes is no error
	$(PY) -m eval run $(EVAL_OUT)/exp --out $(EVAL_OUT)/results $(if $(EVAL_TINY),--trials 1 --no-affine) \
	  $(RUN_ARGS) || [ -n "$(EVAL_TINY)" ]
	$(PY) -m eval report $(EVAL_OUT)/results --out $(EVAL_OUT)/table $(REPORT_ARGS)

clean: ## remove outputs (keeps .venv)
	rm -rf outputs bench .pytest_cache

.PHONY: help install test lint sample annotate report bench-annotate bench-job bench-extract bench-backbone bench-gpu bench-train bench-eval train check-assets train-tiny eval clean
