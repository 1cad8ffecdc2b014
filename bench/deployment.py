r"""Deploying at ImageNet scale: storage, rebuild time, memory and latency of 224-px bundles.

  .venv/bin/python bench/deployment.py --backbone=mobilenet_v2 \
      --out=bench/results/deployment_mobilenet_v2
  .venv/bin/python bench/deployment.py --backbone=resnet50 --out=bench/results/deployment_resnet50

Builds, for one backbone at 224 px and superclassed_imagenet's hierarchy (10 superclasses, all
with specialists, 289 subclasses), a flat network (289 outputs) and a generalist with random
weights, and ten specialists made from the generalist the way training makes them
(`make_specialist`, `--freeze_stages=K`), with a simulated fine-tuning: every weight of the
stages a specialist trains moves by 5% of its tensor's standard deviation ("dense", as after
ordinary fine-tuning), or only a random 2% of each kernel's weights move ("sparse", as a
`--delta_keep=0.02` run stores), or, "sign", QAT specialists whose kernels are projected onto
the sign form by the training callback itself (`sign_models`, what `--qat` trains by default:
each weight +-k int8 steps of its channel; sign_nobn: BatchNorm frozen, `--freeze_bn`). The
dense_k<K>_router settings add a router head of width --router_head on the trunk
(`super_sub.models.router_head`, random weights), which routes instead of the generalist's
tail. Accuracy does not enter; sizes and speeds depend on the
architecture, the number of changed weights and their magnitude, not on what the weights
learned. Each setting is exported by `super_sub.bundles.export.export_models` (the command
line's export): int8 TFLite bundle and SavedModel.

Then measures, each runtime in a fresh process that imports only numpy, LiteRT and
super_sub.runtime:
  storage   TFLite bundle and SavedModel as a + b N in units of one fp32 network;
  rebuild   a specialist's rebuild (bytes from base + delta, then a new interpreter), the first
            time (through the skeleton) and later (the fast path), split into its parts;
  runtime   peak RSS and latency per image at batch 1 and batch 32 of the flat int8 network
            and of the two-stage runtime with a cache of one specialist, of all, or of any
            size (--runs, e.g. cache6_random) (after a warm-up that rebuilt each specialist
            once: steady state), with the routing forced (the random generalist would route
            every image to one superclass): superclasses drawn in proportion to their
            ImageNet share (random order: a cache of one rebuilds whenever the superclass
            changes), or the same images grouped by superclass; and with a cache of one plus a `cache_dir` (disk1_random: every
            specialist rebuilt once into a fresh folder during the warm-up, so each switch
            maps its file instead of rebuilding; disk1_packed_random: `packed_weights` too,
            so that it also maps LiteRT's packed weights instead of repacking them).

Builds are kept in --work_dir (delete it to rebuild); `--nobuild` only measures, `--nomeasure`
only builds; `--only=dense_k4 --runs=cache1_random,disk1_random` measures a subset.
Writes <out>.json and <out>.md.

  .venv/bin/python bench/deployment.py --backbone=mobilenet_v2 --saved_model_only

only exports each setting's SavedModel with the current exporter (no TFLite build) and
writes <out>_saved_model.json and .md: its bytes, of which variables and graph, against the
goal (one fp32 network + every specialist's dense delta of what it changed; + the router
head's weights for a setting with one), and the time to assemble a specialist's weights (the
one timing: run it on an idle machine to quote it); dense settings also deflated
(`super-sub-export --deflate_saved_model`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

from _report import in_worker
from _report import memory_kib
from _report import serve_worker
from absl import app
from absl import flags
import numpy as np

_BACKBONE = flags.DEFINE_enum("backbone", "mobilenet_v2", ["mobilenet_v2", "resnet50"],
                              "The 224-px backbone.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/super_sub_deployment",
                                "Where the models and bundles are built (kept between runs).")
_TRUNKS = flags.DEFINE_list("trunks", ["0", "3", "4"], "Shared-trunk sizes K (0: no trunk) of "
                            "the dense setting.")
_ROUTER_TRUNKS = flags.DEFINE_list("router_trunks", ["4"], "Shared-trunk sizes K of the dense "
                                   "settings with a router head (dense_k<K>_router).")
_ROUTER_WIDTH = flags.DEFINE_integer("router_head", 256, "Width of the router head "
                                     "(super_sub.models.router_head).", lower_bound=1)
_SPARSE_KEEP = flags.DEFINE_float("sparse_keep", 0.02, "Share of each kernel the sparse setting "
                                  "changes (measured without a trunk).")
_BUILD = flags.DEFINE_bool("build", True, "Build missing bundles.")
_MEASURE = flags.DEFINE_bool("measure", True, "Measure (a build can run alongside other work; "
                             "measurements should not).")
_RESAVE = flags.DEFINE_bool("resave_saved_model", True, "Re-export each setting's SavedModel "
                            "with the current exporter to report its size (after the timings).")
_IMAGES_B1 = flags.DEFINE_integer("images_batch1", 48, "Images timed at batch 1.")
_IMAGES_B32 = flags.DEFINE_integer("images_batch32", 128, "Images timed at batch 32.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "LiteRT threads per interpreter.")
_OUT = flags.DEFINE_string("out", None, "Results path without suffix "
                           "(default bench/results/deployment_<backbone>).")
_SAVED_MODEL_ONLY = flags.DEFINE_bool("saved_model_only", False, "Only report the SavedModel's "
                                      "size per setting (see the module docstring).")
_ONLY = flags.DEFINE_list("only", [], "Settings to measure (e.g. dense_k4; its _stored copy comes "
                          "with it); default: all.")
RUNS = ("cache1_random", "cache1_grouped", "cache_all_random", "disk1_random",
        "disk1_packed_random")
_RUNS = flags.DEFINE_list("runs", list(RUNS), "Runtime runs to time per setting: "
                          "cache<N>_<order>, cache_all_<order>, disk<N>_<order> or "
                          "disk<N>_packed_<order>, order random or grouped (see run_spec).")
_RUN_LABEL = re.compile(r"(cache|disk)(\d+|_all)(_packed)?_(random|grouped)")
# Internal: one measurement in a fresh process.
_WORKER = flags.DEFINE_string("worker", None, "(internal) JSON spec of one measurement.")

_SHAPE = (224, 224, 3)
_CHANGE = 0.05  # a changed weight moves by this fraction of its tensor's standard deviation


def run_spec(label: str) -> tuple[int, bool, bool | str] | None:
  """(cache size, grouped, cache_dir: False, True or "packed") of a run label, None if it is
  not one: cache<N> keeps N specialists in memory (cache_all: every one), disk<N> adds a
  cache_dir, _packed its packed weights; random or grouped superclass order."""
  m = _RUN_LABEL.fullmatch(label)
  if m is None or (m[2] == "_all" and m[1] == "disk") or (m[3] and m[1] != "disk") or (
      m[2] != "_all" and int(m[2]) < 1):
    return None
  disk = "packed" if m[3] else m[1] == "disk"
  return (16 if m[2] == "_all" else int(m[2])), m[4] == "grouped", disk


# --- building ------------------------------------------------------------------------------------
def settings() -> list[tuple[str, int]]:
  """(name, K) of every bundle: dense at each trunk size, with a router head at each router
  trunk size, sparse without a trunk."""
  return ([(f"dense_k{k}", int(k)) for k in _TRUNKS.value]
          + [(f"dense_k{k}_router", int(k)) for k in _ROUTER_TRUNKS.value]
          + [("sparse_k0", 0), ("sign_k0", 0), ("sign_nobn_k0", 0)])


def keep_of(name: str) -> float:
  """The share of each kernel the setting `name` (from `settings`) changes."""
  return _SPARSE_KEEP.value if name.startswith("sparse") else 1.0


def form_of(name: str) -> str:
  """How the setting `name` (from `settings`) makes its specialists: "delta" (`finetune`),
  "sign" or "sign_nobn" (`sign_models`, BatchNorm moved or frozen)."""
  return name.rsplit("_k", 1)[0] if name.startswith("sign") else "delta"


def has_router(name: str) -> bool:
  """Whether the setting `name` (from `settings`) routes with a router head."""
  return name.endswith("_router")


def finetune(model, frozen_stages: int, keep: float, rng: np.random.Generator) -> None:
  """Moves the weights of the stages a specialist trains, in place (see the module docstring).

  keep == 1: every weight (kernels, biases, BatchNorm parameters and statistics) moves;
  keep < 1: that share of each kernel's entries moves, nothing else.
  """
  # pylint: disable=import-outside-toplevel
  from super_sub.models import backbones
  for layer in model.layers:
    stage = backbones.stage_of(layer.name)
    if (not layer.weights or layer.name == backbones.INPUT_NORM_NAME
        or (stage is not None and stage < frozen_stages)):
      continue
    layer.set_weights([w if keep < 1 and w.ndim < 2 else
                       moved(w, "moving_variance" in var.name, rng, keep)
                       for var, w in zip(layer.weights, layer.get_weights())])


def moved(w: np.ndarray, variance: bool, rng: np.random.Generator, keep: float = 1.0):
  """`w` after the simulated change: + noise of 5% of its standard deviation (on a random share
  `keep` of its entries), or for a BatchNorm variance, x exp of that noise in units of 1/5%."""
  scale = _CHANGE * (float(w.std()) or float(np.abs(w).mean()) or 1.0)
  noise = rng.standard_normal(w.shape).astype(np.float32) * scale
  if keep < 1:
    noise *= rng.random(w.shape) < keep
  return w * np.exp(noise / scale * _CHANGE) if variance else w + noise


def make_models(backbone: str, h, frozen_stages: int, keep: float, form: str = "delta"):
  """(generalist, {superclass: specialist}) with random weights, the specialists fine-tuned
  as `finetune` simulates (`form` "sign" or "sign_nobn": `sign_models`); the same for the same
  arguments."""
  # pylint: disable=import-outside-toplevel
  from super_sub import keras
  from super_sub.models import classifiers
  # pylint: enable=import-outside-toplevel
  keras.utils.set_random_seed(1)
  generalist = classifiers.build_classifier(backbone, _SHAPE, h.num_superclasses, "generalist",
                                            "generalist")
  if form != "delta":
    return sign_models(generalist, h, move_batchnorm=form == "sign")
  specialists = {}
  for sup in h.specialist_superclasses():
    m = classifiers.make_specialist(generalist, len(h.subclass_range(sup)), f"specialist_{sup}",
                                    freeze_stages=frozen_stages)
    finetune(m, frozen_stages, keep, np.random.default_rng(100 + sup))
    specialists[sup] = m
  return generalist, specialists


def sign_models(generalist, h, move_batchnorm: bool = True):
  """(QAT generalist, {superclass: QAT sign specialist}), made the way `--qat` training makes
  them (its default `--specialist_form=sign`).

  The QAT generalist's quantizer ranges are set by one training-mode call on random images.
  Each specialist is its QAT copy with a new head; a simulated fine-tuning moves every backbone
  kernel weight and BatchNorm as `finetune` does (`moved`; BatchNorm stays unless
  `move_batchnorm`: `--freeze_bn`); then the training callback's projection
  (`deltas.project_once`, as `DeltaToBase(form="sign")` after every step) maps each kernel's
  move onto the sign form, +-k int8 steps of its channel's pinned
  range, the range-setting weights held.
  """
  # pylint: disable=import-outside-toplevel
  from super_sub.models import classifiers
  from super_sub.training import deltas
  from super_sub.training import qat as qat_lib
  # pylint: enable=import-outside-toplevel
  images = np.random.default_rng(1).random((8, *_SHAPE), dtype=np.float32)
  base = qat_lib.quantize(generalist)
  base(images, training=True)
  specialists = {}
  for sup in h.specialist_superclasses():
    m = qat_lib.quantize(classifiers.make_specialist(
        generalist, len(h.subclass_range(sup)), f"specialist_{sup}"))
    classifiers.copy_backbone_weights(base, m)
    start = [v.numpy() for v in deltas.backbone_variables(m)]
    rng = np.random.default_rng(100 + sup)
    for var, w in zip(deltas.backbone_variables(m), start):
      name = deltas.short_name(var)
      if not (deltas.is_kernel(var) or move_batchnorm and name in (
          "gamma", "beta", "moving_mean", "moving_variance")):
        continue
      var.assign(moved(w, name == "moving_variance", rng))
    deltas.project_once(m, start, form="sign")
    specialists[sup] = m
  return base, specialists


def saved_model_now(backbone: str, frozen_stages: int, keep: float, router: bool = False,
                    deflate: bool = False, timed: bool = False, form: str = "delta") -> dict:
  """The SavedModel's bytes as the current exporter writes it, from models made the same way
  (the built bundles may predate an exporter change; sizes do not depend on weight values,
  except deflated ones, on the simulated fine-tuning's); `timed`: also the median time to
  assemble a specialist's weights (what each routed batch pays per specialist; three rounds
  over all specialists after one untimed)."""
  # pylint: disable=import-outside-toplevel
  from super_sub import hierarchy as hierarchy_lib
  from super_sub.bundles import saved_model
  from super_sub.models import router_head
  # pylint: enable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  generalist, specialists = make_models(backbone, h, frozen_stages, keep, form)
  head = (router_head.build_router_head(generalist, frozen_stages, _ROUTER_WIDTH.value)
          if router else None)
  module = saved_model.SuperSubModule(generalist, specialists, h, frozen_stages, head, deflate)
  times = []
  for round_ in range(4 if timed else 0):
    for k in specialists:
      start = time.perf_counter()
      module.assemble(k).numpy()
      if round_:
        times.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as tmp:
    saved_model.save_module(module, os.path.join(tmp, "sm"))
    sizes = {"saved_model_bytes": _bytes(os.path.join(tmp, "sm")),
             "saved_model_variables_bytes": _bytes(os.path.join(tmp, "sm", "variables"))}
  return {**sizes, "assemble_ms": 1e3 * float(np.median(times))} if timed else sizes


def build(work: str, backbone: str, log=print) -> dict:
  """Builds the flat int8 network and every setting's export under `work` (skips what exists)."""
  # pylint: disable=import-outside-toplevel
  from super_sub import hierarchy as hierarchy_lib
  from super_sub import keras
  from super_sub.bundles import export as export_lib
  from super_sub.bundles import tflite
  from super_sub.models import classifiers
  from super_sub.models import router_head
  # pylint: enable=import-outside-toplevel
  info_path = os.path.join(work, "build.json")
  info = json.load(open(info_path, encoding="utf-8")) if os.path.exists(info_path) else {}
  os.makedirs(work, exist_ok=True)
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  representative = rng.random((16, *_SHAPE), dtype=np.float32)
  flat_path = os.path.join(work, "flat_int8.tflite")
  if not os.path.exists(flat_path):
    flat = classifiers.build_classifier(backbone, _SHAPE, h.num_subclasses, "flat", "flat")
    start = time.perf_counter()
    data = tflite.to_tflite(flat, representative)
    info["flat"] = {"convert_s": time.perf_counter() - start, "bytes": len(data),
                    "num_params": flat.count_params()}
    with open(flat_path, "wb") as f:
      f.write(data)
  for name, k in settings():
    export_dir = os.path.join(work, name)
    if (os.path.exists(os.path.join(export_dir, "manifest.json"))
        or (_ONLY.value and name not in _ONLY.value)):
      continue
    keep = keep_of(name)
    generalist, specialists = make_models(backbone, h, k, keep, form_of(name))
    # A router head with random weights (its speed does not depend on them); the same
    # generalist and specialists as the setting without it.
    router = (router_head.build_router_head(generalist, k, _ROUTER_WIDTH.value)
              if has_router(name) else None)
    start = time.perf_counter()
    export_lib.export_models(export_dir, h, generalist, specialists, representative,
                             shared_stages=k, framing="center_crop", log=log,
                             router_head=router)
    info[name] = {"export_s": time.perf_counter() - start, "trunk": k, "keep": keep,
                  "form": form_of(name),
                  "router_head": _ROUTER_WIDTH.value if router is not None else None}
    del specialists
    keras.backend.clear_session()
    with open(info_path, "w", encoding="utf-8") as f:
      json.dump(info, f, indent=2)
  with open(info_path, "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2)
  return info


def savedmodel_bound(backbone: str, frozen_stages: int, router: bool = False) -> int:
  """The issue's goal for the SavedModel: one fp32 network + every specialist's dense delta
  of what it changed (the stages from K on and its head), in bytes; with a router head, its
  weights after the trunk too (a model the goal predates: it routes, and the generalist stays
  stored as the specialists' base)."""
  # pylint: disable=import-outside-toplevel
  from super_sub import hierarchy as hierarchy_lib
  from super_sub.models import backbones
  from super_sub.models import classifiers
  from super_sub.models import router_head
  from super_sub.models import trunk
  # pylint: enable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  generalist = classifiers.build_classifier(backbone, _SHAPE, h.num_superclasses, "generalist",
                                            "generalist")
  changed_backbone = sum(
      layer.count_params() for layer in generalist.layers[:-1]
      if layer.name != backbones.INPUT_NORM_NAME
      and not (backbones.stage_of(layer.name) is not None
               and backbones.stage_of(layer.name) < frozen_stages))
  features = int(generalist.layers[-1].input.shape[-1])
  heads = sum((features + 1) * len(h.subclass_range(s)) for s in h.specialist_superclasses())
  routing = 0
  if router:
    head = router_head.build_router_head(generalist, frozen_stages, _ROUTER_WIDTH.value)
    routing = sum(layer.count_params()
                  for layer in head.layers[trunk.cut_index(generalist, frozen_stages) + 1:])
  return 4 * (generalist.count_params() + len(h.specialist_superclasses()) * changed_backbone
              + heads + routing)


def saved_model_sizes(backbone: str, out: str) -> None:
  """Writes out.json and out.md: each setting's SavedModel size against the goal."""
  rows = {}
  for name, k in settings():
    keep = keep_of(name)
    router = has_router(name)
    goal = savedmodel_bound(backbone, k, router=router)
    # Dense settings also deflated (--deflate_saved_model): sparse ones store few dense bytes.
    for deflate in (False, True) if name.startswith("dense") else (False,):
      sizes = saved_model_now(backbone, k, keep, router=router, deflate=deflate, timed=True,
                              form=form_of(name))
      row = name + " deflated" * deflate
      rows[row] = {**sizes, "graph_bytes": sizes["saved_model_bytes"]
                   - sizes["saved_model_variables_bytes"], "goal_bytes": goal,
                   "bytes_over_goal": sizes["saved_model_bytes"] - goal}
      print(row, rows[row], flush=True)
  command = (f"python bench/deployment.py --backbone={backbone} "
             f"--trunks={','.join(_TRUNKS.value)} --router_trunks={','.join(_ROUTER_TRUNKS.value)} "
             f"--router_head={_ROUTER_WIDTH.value} --sparse_keep={_SPARSE_KEEP.value} "
             "--saved_model_only")
  files_out = {"command": command, "backbone": backbone, "machine": platform.machine(),
               "settings": rows}
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(files_out, f, indent=2)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(saved_model_markdown(files_out))


def saved_model_markdown(r: dict) -> str:
  """The SavedModel sizes table of --saved_model_only."""
  # Imported here: the measuring processes run this file and import nothing they need not.
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  lines = [f"# SavedModel size, {r['backbone']} at 224 px, N = 10 (superclassed_imagenet)", "",
           f"Command: `{r['command']}`", ""]
  lines += markdown_table(
      ["setting", "SavedModel (MB)", "variables", "graph", "goal", "over the goal",
       "assembling a specialist (ms, median)"],
      [[name, f"{s['saved_model_bytes'] / 1e6:.1f}",
        f"{s['saved_model_variables_bytes'] / 1e6:.2f}", f"{s['graph_bytes'] / 1e6:.2f}",
        f"{s['goal_bytes'] / 1e6:.2f}", f"{100 * s['bytes_over_goal'] / s['goal_bytes']:+.1f}%",
        f"{s['assemble_ms']:.1f}"] for name, s in r["settings"].items()])
  return "\n".join(lines) + "\n"


# --- measuring (worker processes: no TensorFlow) ------------------------------------------------
class ForcedRouting:
  """Runs the real router (its cost counts), then routes to a given superclass schedule.

  The router is the generalist (logits out), or a trunk with the router head inside it
  ((features, logits) out: TwoStageLite.trunk with TwoStageLite.router None).
  """

  def __init__(self, router, schedule: np.ndarray):
    self.router, self.schedule, self.position = router, schedule, 0

  def __call__(self, x: np.ndarray):
    out = self.router(x)
    logits = out[1] if isinstance(out, tuple) else out
    forced = np.full_like(logits, -30.0)
    n = len(x)
    forced[np.arange(n), self.schedule[self.position:self.position + n]] = 0.0
    self.position += n
    return (out[0], forced) if isinstance(out, tuple) else forced


def schedule(num_images: int, grouped: bool, seed: int = 0) -> np.ndarray:
  """Superclass of each image, drawn in proportion to its subclass count (each ImageNet class
  has ~1,300 images, so this is its share of the data); sorted when grouped."""
  from super_sub import hierarchy as hierarchy_lib  # pylint: disable=import-outside-toplevel
  h = hierarchy_lib.load_hierarchy("superclassed_imagenet")
  share = np.array([len(h.subclass_range(s)) for s in range(h.num_superclasses)], float)
  draw = np.random.default_rng(seed).choice(h.num_superclasses, num_images, p=share / share.sum())
  return np.sort(draw, kind="stable") if grouped else draw


def measure_runtime(spec: dict) -> dict:
  """Peak RSS and latency per image at batch 1 and 32 of one runtime (spec: see main)."""
  from super_sub.runtime import predictor  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  n1, n32 = spec["images_batch1"], spec["images_batch32"]
  images = rng.integers(0, 256, (max(n1, n32), *_SHAPE), dtype=np.uint8)
  rss_before = memory_kib("VmRSS") / 1024
  result = {}
  cache_dir = tempfile.mkdtemp(prefix="super_sub_cache_") if spec.get("disk") else None
  if spec["kind"] == "flat":
    with open(spec["model"], "rb") as f:
      flat = predictor.LiteModel(f.read(), spec["threads"], "flat")
    run = lambda x: flat(x.astype(np.float32) / 255)  # noqa: E731
    counts = lambda: (0, 0)  # noqa: E731
    run(images[:1])
  else:
    lite = predictor.TwoStageLite(spec["model"], cache_size=spec["cache"],
                                  num_threads=spec["threads"], cache_dir=cache_dir,
                                  packed_weights=spec.get("disk") == "packed")
    # Warm-up: each specialist's first rebuild goes through its skeleton once per process
    # (timed apart, by rebuild_speed); a cache of all then holds every interpreter, a
    # cache_dir every specialist's file.
    for k in sorted(lite.bundle.deltas):
      lite.specialist(k)
    lite.predict(images[:1])
    routes_in_trunk = lite.router is None  # a router head, inside the trunk's interpreter
    real = lite.trunk if routes_in_trunk else lite.router
    counts = lambda: (lite.num_rebuilds, lite.num_loads)  # noqa: E731
    run = lambda x: lite.predict(x, batch_size=len(x))  # noqa: E731
  for batch, count in ((1, n1), (32, n32)):
    if spec["kind"] != "flat":
      forced = ForcedRouting(real, schedule(count, spec["grouped"], seed=batch))
      if routes_in_trunk:
        lite.trunk = forced
      else:
        lite.router = forced
    before, start = counts(), time.perf_counter()
    for i in range(0, count, batch):
      run(images[i:i + batch])
    seconds = time.perf_counter() - start
    after = counts()
    result[f"batch_{batch}"] = {"ms_per_image": 1000 * seconds / count,
                                "rebuilds": after[0] - before[0],
                                "switches": after[1] - before[1], "images": count}
  if cache_dir is not None:
    shutil.rmtree(cache_dir)  # this process's own temporary folder
  result["rss_after_imports_mb"] = rss_before
  result["peak_rss_mb"] = memory_kib("VmHWM") / 1024
  result["model_rss_mb"] = result["peak_rss_mb"] - rss_before
  return result


def measure_rebuild(bundle_dir: str) -> dict:
  """A specialist's rebuild time, first (skeleton) and later (fast path), then its interpreter:
  bench/rebuild_speed.py in a fresh process."""
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "rebuild_speed.py"),
                    f"--bundle={bundle_dir}", "--repeats=5", f"--out={tmp}/rebuild"],
                   check=True, capture_output=True, text=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    with open(f"{tmp}/rebuild.json", encoding="utf-8") as f:
      return json.load(f)["bundles"][0]


def stored_copy(bundle_dir: str) -> str:
  """The same bundle with its deltas stored as they are (`--nocompress_deltas`), beside it."""
  # pylint: disable=import-outside-toplevel
  from super_sub.formats import bundle_loader as bundle_lib
  from super_sub.formats import bundle_writer
  # pylint: enable=import-outside-toplevel
  out = bundle_dir + "_stored"
  if not os.path.exists(os.path.join(out, "manifest.json")):
    b = bundle_lib.load_bundle(bundle_dir)
    bundle_writer.write_tflite_bundle(out, b.hierarchy, b.generalist,
                                      {k: b.specialist(k) for k in b.deltas},
                                      b.manifest["input"], trunk=b.trunk, compress_deltas=False,
                                      router_head=b.router_head)
  return out


def specialist_count(bundle_dir: str) -> int:
  """N, the specialists a bundle holds."""
  with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as f:
    return len(json.load(f)["specialists"])


def _bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(folder)
             for n in names)


# --- the whole bench -----------------------------------------------------------------------------
def main(argv):
  del argv
  if serve_worker(_WORKER.value, measure_runtime):
    return
  backbone = _BACKBONE.value
  if _SAVED_MODEL_ONLY.value:
    saved_model_sizes(backbone, (_OUT.value or f"bench/results/deployment_{backbone}")
                      + "_saved_model")
    return
  unknown = ([f"--runs={r}" for r in _RUNS.value if run_spec(r) is None]
             + [f"--only={n}" for n in _ONLY.value if n not in dict(settings())])
  if unknown:
    raise app.UsageError(f"{', '.join(unknown)}: expected runs like {list(RUNS)} or cache6_random "
                         f"(--runs' help) and settings "
                         f"from {[n for n, _ in settings()]}")
  work = os.path.join(_WORK_DIR.value, backbone)
  if _BUILD.value:
    build(work, backbone)
  if not _MEASURE.value:
    return
  with open(os.path.join(work, "build.json"), encoding="utf-8") as f:
    info = json.load(f)
  info.setdefault("flat", {"bytes": os.path.getsize(os.path.join(work, "flat_int8.tflite"))})
  result = {"command": " ".join(["python"] + sys.argv), "backbone": backbone,
            "machine": platform.machine(), "cpus": os.cpu_count(), "threads": _THREADS.value,
            "build": info, "settings": {}}
  common = {"threads": _THREADS.value, "images_batch1": _IMAGES_B1.value,
            "images_batch32": _IMAGES_B32.value}
  flat_spec = {**common, "kind": "flat", "model": os.path.join(work, "flat_int8.tflite")}
  print("runtime: flat int8")
  flat_runs = [in_worker(__file__, flat_spec)]
  for name, _ in settings():
    if _ONLY.value and name not in _ONLY.value:
      continue
    export_dir = os.path.join(work, name)
    with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
      manifest = json.load(f)
    entry = {"storage": storage_of(manifest)}
    entry["storage"]["saved_model_goal_bytes"] = savedmodel_bound(
        backbone, info[name]["trunk"], router=has_router(name))
    bundle = os.path.join(export_dir, "tflite")
    print(f"{name}: rebuild")
    entry["rebuild"] = measure_rebuild(bundle)
    runs = [(label, *run_spec(label)) for label in _RUNS.value]
    if name.startswith(("sparse", "sign")):
      runs = [r for r in runs if r[0] == "cache1_random"]
    for label, cache, grouped, disk in runs:
      print(f"{name}: {label}")
      entry[label] = in_worker(__file__, {**common, "kind": "two_stage", "model": bundle,
                                          "cache": cache, "grouped": grouped, "disk": disk})
    result["settings"][name] = entry
    if name.startswith("dense"):
      stored = stored_copy(bundle)
      entry = {"storage": {**entry["storage"], "tflite_bytes": _bytes(stored)}}
      unit = entry["storage"]["fp32_network_bytes"]
      entry["storage"]["tflite_ratio"] = entry["storage"]["tflite_bytes"] / unit
      entry["storage"]["tflite_b"] = (  # a is unchanged
          entry["storage"]["tflite_ratio"] - entry["storage"]["tflite_a"]) / specialist_count(bundle)
      print(f"{name}, deltas stored: rebuild")
      entry["rebuild"] = measure_rebuild(stored)
      for label, cache, grouped, disk in runs:
        if label not in ("cache1_random", "cache1_grouped"):  # no switch reads a delta there
          continue
        print(f"{name}, deltas stored: {label}")
        entry[label] = in_worker(__file__, {**common, "kind": "two_stage", "model": stored,
                                            "cache": cache, "grouped": grouped, "disk": disk})
      result["settings"][name + "_stored"] = entry
  # The flat network again at the end: this machine's speed drifts by 10-30% over a run, so
  # the two-stage runtimes are compared with the mean of a measurement before and after them.
  print("runtime: flat int8, again")
  flat_runs.append(in_worker(__file__, flat_spec))
  result["flat"] = {"runs": flat_runs, "peak_rss_mb": max(r["peak_rss_mb"] for r in flat_runs),
                    "model_rss_mb": max(r["model_rss_mb"] for r in flat_runs)}
  for batch in ("batch_1", "batch_32"):
    result["flat"][batch] = {"ms_per_image": float(np.mean(
        [r[batch]["ms_per_image"] for r in flat_runs]))}
  for name, k in settings() if _RESAVE.value else ():
    if name not in result["settings"]:
      continue
    print(f"{name}: SavedModel with the current exporter")
    storage = result["settings"][name]["storage"]
    keep = keep_of(name)
    storage["saved_model_bytes_built"] = storage["saved_model_bytes"]
    storage.update(saved_model_now(backbone, k, keep, router=has_router(name),
                                   form=form_of(name)))
    storage["saved_model_ratio"] = storage["saved_model_bytes"] / storage["fp32_network_bytes"]
    if name + "_stored" in result["settings"]:  # the same SavedModel
      result["settings"][name + "_stored"]["storage"].update(
          {key: storage[key] for key in ("saved_model_bytes", "saved_model_variables_bytes",
                                         "saved_model_ratio", "saved_model_bytes_built")})
  out = _OUT.value or f"bench/results/deployment_{backbone}"
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  markdown = to_markdown(result)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)


def storage_of(manifest: dict) -> dict:
  """TFLite and SavedModel bytes, in units of one fp32 network, with the TFLite a + b N fit."""
  from super_sub.bundles import storage  # pylint: disable=import-outside-toplevel
  fit = storage.storage_fit(manifest)
  b = manifest["bytes"]
  unit = b["single_fp32_network"]
  variables = sum(v["bytes"] for p, v in manifest["files"].items()
                  if p.startswith("saved_model/variables/"))
  return {"fp32_network_bytes": unit, "tflite_bytes": b["tflite_bundle"],
          "tflite_a": fit["a"], "tflite_b": fit["b"], "tflite_ratio": fit["storage_ratio"],
          "tflite_naive_int8_bytes": b["tflite_naive_int8"],
          "saved_model_bytes": b["saved_model"], "saved_model_ratio": b["saved_model"] / unit,
          "saved_model_variables_bytes": variables,
          "naive_fp32_bytes": b["naive_fp32_bundle"]}


def _runs(flat: dict, batch: str) -> str:
  return " / ".join(f"{x[batch]['ms_per_image']:.1f}" for x in flat["runs"])


def to_markdown(r: dict) -> str:
  """The tables BENCHMARKS.md quotes."""
  from super_sub.analysis.tables import markdown_table  # pylint: disable=import-outside-toplevel
  flat = r["flat"]
  unit = next(iter(r["settings"].values()))["storage"]["fp32_network_bytes"]
  lines = [f"`{r['command']}`", "",
           f"{r['backbone']} at 224 px, superclassed_imagenet hierarchy (N = 10 specialists), "
           f"{r['cpus']} CPUs, {r['threads']} LiteRT threads. One fp32 network = "
           f"{unit / 1e6:.1f} MB; the flat int8 network = {r['build']['flat']['bytes'] / 1e6:.1f} MB.",
           ""]
  lines += markdown_table(
      ["setting", "TFLite bundle MB", "= a + b N (one fp32 network = 1)",
       "SavedModel MB (variables)", "x one fp32 network",
       "goal: 1 network + dense deltas of the changed stages (+ router head), MB",
       "N + 1 separate fp32 networks MB"],
      [[name, f"{s['tflite_bytes'] / 1e6:.1f}",
        f"{s['tflite_a']:.3f} + {s['tflite_b']:.4f} N = {s['tflite_ratio']:.2f}",
        f"{s['saved_model_bytes'] / 1e6:.1f} ({s['saved_model_variables_bytes'] / 1e6:.1f})",
        f"{s['saved_model_ratio']:.2f}", f"{s['saved_model_goal_bytes'] / 1e6:.1f}",
        f"{s['naive_fp32_bytes'] / 1e6:.1f}"]
       for name, s in ((name, e["storage"]) for name, e in r["settings"].items())])
  lines += [""] + markdown_table(
      ["setting", "specialist MB", "rebuild bytes, first / later ms", "new interpreter ms",
       "its first invoke ms"],
      [[name, f"{rb['specialist_bytes'] / 1e6:.2f}",
        f"{rb['first_rebuild_ms']:.1f} / {rb['later_rebuild_ms']:.1f}",
        f"{rb['new_interpreter_ms']:.1f}", f"{rb['first_invoke_ms']:.1f}"]
       for name, rb in ((name, e["rebuild"]) for name, e in r["settings"].items())])
  lines += ["", "x flat: against the mean of the flat network's two measurements.", "",
            "switches: specialist interpreters built (each a rebuild, except the disk1 runs', "
            "which map a file; disk1_packed_random also maps the packed weights).", ""]
  rows = [["flat int8 (before / after the others)", _runs(flat, "batch_1"), "",
           _runs(flat, "batch_32"), "", f"{flat['peak_rss_mb']:.0f}",
           f"{flat['model_rss_mb']:.0f}"]]
  for name, e in r["settings"].items():
    for label in (label for label in e if run_spec(label) is not None):
      x = e[label]
      switches = {b: x[b].get("switches", x[b]["rebuilds"]) for b in ("batch_1", "batch_32")}
      rows.append([
          f"{name}, {label}",
          f"{x['batch_1']['ms_per_image']:.1f} "
          f"({x['batch_1']['ms_per_image'] / flat['batch_1']['ms_per_image']:.2f})",
          f"{switches['batch_1']}/{x['batch_1']['images']}",
          f"{x['batch_32']['ms_per_image']:.1f} "
          f"({x['batch_32']['ms_per_image'] / flat['batch_32']['ms_per_image']:.2f})",
          switches["batch_32"],
          f"{x['peak_rss_mb']:.0f} ({x['peak_rss_mb'] / flat['peak_rss_mb']:.2f})",
          f"{x['model_rss_mb']:.0f}"])
  lines += markdown_table(
      ["runtime", "ms/image batch 1 (x flat)", "switches", "ms/image batch 32 (x flat)",
       "switches", "peak RSS MB (x flat)", "model part MB"], rows)
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
