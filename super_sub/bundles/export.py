"""Exports a trained run for deployment, with the base weights stored once per bundle.

`export(run, export_dir)` writes, atomically (temporary folder, then rename):
  export_dir/saved_model/   for servers (super_sub.bundles.saved_model): base + sparse deltas,
                            hard two-stage routing in `serving_default`
  export_dir/tflite/        the edge bundle (docs/bundle_format.md): the int8 generalist,
                            which is also the base, and each specialist as a delta over it;
                            with --freeze_stages=K, the first K stages once as a shared trunk
                            (super_sub.models.trunk) and the generalist and specialists as tails;
                            with --router_head, the router head's tail, which then routes
  export_dir/manifest.json  sizes against the paper's unit (one fp32 network) and checksums
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from super_sub import hierarchy as hierarchy_lib
from super_sub._internal import files
from super_sub._internal.compat import keras
from super_sub.bundles import saved_model
from super_sub.bundles import storage
from super_sub.bundles import tflite
from super_sub.models import trunk as trunk_lib
from super_sub.formats import bundle_writer
from super_sub.training import run as run_lib


FORMAT = "super-sub-export"  # the top-level manifest's "format": marks an export folder
VERSION = 1


def export(run: run_lib.Run, export_dir: str,
           representative: np.ndarray | None = None,
           log: Callable[[str], None] = print, overwrite: bool = False,
           compress_deltas: bool = True, deflate_saved_model: bool = False) -> dict:
  """Writes export_dir/tflite and export_dir/manifest.json for a trained run.

  Args:
    run: the trained run (`Run.open(model_dir)`).
    export_dir: the output folder; replaced as a whole only once everything is written. An
      existing folder must be empty or an earlier export (its manifest.json says so), unless
      `overwrite`: super-sub never deletes files it did not write.
    representative: images for full-integer calibration; default 256 training images.
    overwrite: replace export_dir even if it holds something else.
    compress_deltas: deflate the TFLite bundle's deltas (smallest) or store them as they are
      (faster specialist switches; super_sub.formats.bundle_writer.write_tflite_bundle).
    deflate_saved_model: store the SavedModel's dense differences deflated (smaller, slower
      for each routed batch; super_sub.bundles.saved_model.export_saved_model).
  Returns:
    The top-level manifest.
  Raises:
    FileNotFoundError: a stage the bundle needs has not finished training.
    OutputDirError: export_dir holds something else (before any work is done).
    ValueError: the run has dustbin specialists, which bundles cannot hold yet.
  """
  files.check_replaceable(export_dir, "export", "manifest.json", FORMAT, overwrite)
  if run.config.dustbin:
    raise ValueError(f"{run.model_dir} has dustbin specialists (--dustbin={run.config.dustbin}), "
                     "which the bundles cannot hold yet: their routing has no 'not mine' "
                     "fallback. Export a run trained without --dustbin")
  generalist = run.load_model(run.generalist)
  specialists = {k: run.load_model(stage) for k, stage in run.specialists().items()}
  if representative is None:
    representative = tflite.representative_images(run)
  # The paper's unit: one float network, counted from the float generalist's parameters.
  factors = {k: run.load_factors(stage) for k, stage in run.specialists().items()
             if run.config.specialist_form == "lowrank"}
  router = run.load_model(run_lib.ROUTER_HEAD) if run.config.router_head else None
  return export_models(export_dir, run.hierarchy, generalist, specialists, representative,
                       shared_stages=run.config.freeze_stages, framing=run.config.framing,
                       fp32_network_bytes=4 * run.metrics(run_lib.GENERALIST)["num_params"],
                       log=log, overwrite=overwrite, compress_deltas=compress_deltas,
                       factors=factors, router_head=router,
                       deflate_saved_model=deflate_saved_model)


def export_models(export_dir: str, hierarchy: hierarchy_lib.Hierarchy,
                  generalist: keras.Model, specialists: dict[int, keras.Model],
                  representative: np.ndarray, shared_stages: int = 0, framing: str = "resize",
                  fp32_network_bytes: int | None = None,
                  log: Callable[[str], None] = print, overwrite: bool = False,
                  compress_deltas: bool = True, factors: dict | None = None,
                  router_head: keras.Model | None = None,
                  deflate_saved_model: bool = False) -> dict:
  """`export` for models in memory (what bench/deployment.py exports without a training run).

  Args:
    shared_stages: K > 0 puts the first K stages once into a shared trunk (every specialist
      must have left them unchanged, as `--freeze_stages=K` training does).
    framing: how image files become model input ("resize" or "center_crop").
    fp32_network_bytes: the paper's unit, one float network (default: 4 x the generalist's
      parameters).
    factors: superclass -> the low-rank factors of a `--specialist_form=lowrank` specialist
      (`Run.load_factors`), stored factored in the TFLite bundle.
    router_head: a router head (super_sub.models.router_head) on the same trunk, which then
      routes in both bundles; needs shared_stages > 0.
  Other arguments and the result as `export`.
  """
  files.check_replaceable(export_dir, "export", "manifest.json", FORMAT, overwrite)
  h = hierarchy
  shared = shared_stages
  if router_head is not None and not shared:
    raise ValueError("a router head reads the shared trunk's features: export it with "
                     "shared_stages >= 1 (the run's --freeze_stages)")
  log(f"converting the generalist and {len(specialists)} specialists to int8 TFLite"
      + (f", the first {shared} stages as a shared trunk" if shared else ""))
  trunk_tflite = router_tflite = None
  if shared:
    for m in [*specialists.values()] + ([router_head] if router_head is not None else []):
      trunk_lib.check_shared(generalist, m, shared)
    trunk, generalist_tail = trunk_lib.split(generalist, shared)
    features = trunk.predict(representative, batch_size=64, verbose=0)
    # The features cross from trunk to tails as int8 with the tails' input parameters
    # (`tflite.feeding`); every tail is calibrated on the same features, so they share them.
    generalist_tflite = tflite.to_tflite(generalist_tail, features, int8_input=True)
    specialist_tflite = {k: tflite.to_tflite(trunk_lib.split(m, shared)[1], features,
                                             int8_input=True) for k, m in specialists.items()}
    tails = {f"specialist {k}'s": model for k, model in specialist_tflite.items()}
    if router_head is not None:
      router_tflite = tflite.to_tflite(trunk_lib.split(router_head, shared)[1], features,
                                       int8_input=True)
      tails["the router head's"] = router_tflite
    boundary = tflite.boundary_quantization(generalist_tflite, "generalist tail input")
    for what, model in tails.items():
      theirs = tflite.boundary_quantization(model, f"{what} tail input")
      if theirs != boundary:
        raise ValueError(f"{what} tail quantizes the trunk's features with (scale, "
                         f"zero point) {theirs}, the generalist's with {boundary}: the trunk "
                         f"can feed only one")
    trunk_tflite = tflite.feeding(tflite.to_tflite(trunk, representative, int8_output=True),
                                  generalist_tflite)
  else:
    generalist_tflite = tflite.to_tflite(generalist, representative)
    specialist_tflite = {k: tflite.to_tflite(m, representative) for k, m in specialists.items()}
  # N + 1 separate int8 networks; with a trunk, each would carry its own copy of it.
  naive_int8 = len(generalist_tflite) + sum(len(b) for b in specialist_tflite.values()) + (
      (len(specialists) + 1) * len(trunk_tflite) if trunk_tflite else 0)
  fp32_network = fp32_network_bytes or 4 * generalist.count_params()
  with files.atomic_dir(export_dir, "export", "manifest.json", FORMAT, overwrite) as tmp:
    saved_model.export_saved_model(os.path.join(tmp, "saved_model"), generalist,
                                   specialists, h, shared_stages=shared,
                                   router_head=router_head, deflate=deflate_saved_model)
    bundle_writer.write_tflite_bundle(
        os.path.join(tmp, "tflite"), h, generalist_tflite, specialist_tflite,
        {"shape": list(generalist.input_shape[1:]), "dtype": "float32", "range": [0.0, 1.0],
         "framing": framing},
        trunk=trunk_tflite, compress_deltas=compress_deltas, factors=factors,
        router_head=router_tflite)
    listing = storage.listing(tmp)
    tflite_bytes = sum(v["bytes"] for p, v in listing.items() if p.startswith("tflite/"))
    saved_model_bytes = sum(v["bytes"] for p, v in listing.items()
                            if p.startswith("saved_model/"))
    manifest = {
        "format": FORMAT, "version": VERSION,
        "num_superclasses": h.num_superclasses, "num_specialists": len(specialists),
        "hierarchy": h.to_dict(),
        "bytes": {
            "single_fp32_network": fp32_network,
            "naive_fp32_bundle": 4 * (generalist.count_params() + sum(
                m.count_params() for m in specialists.values())),
            "saved_model": saved_model_bytes,
            "saved_model_deflated": deflate_saved_model,
            "tflite_bundle": tflite_bytes,
            "tflite_naive_int8": naive_int8,
        },
        "storage_ratio": tflite_bytes / fp32_network,
        "files": listing,
    }
    files.write_json(os.path.join(tmp, "manifest.json"), manifest)
  log(f"wrote {export_dir}: TFLite bundle {tflite_bytes:,} bytes = "
      f"{manifest['storage_ratio']:.3f} x one fp32 network ({fp32_network:,} bytes); "
      f"{len(specialists) + 1} separate int8 files would take "
      f"{manifest['bytes']['tflite_naive_int8']:,}")
  return manifest
