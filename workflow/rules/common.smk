# Configuration checks and the helper functions of the workflow (kept here, so rule files hold no
# lambdas and no function definitions).

import hashlib
import json
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import ngp_ohem.report
from ngp_ohem.config import DEFAULTS, deep_merge
from ngp_ohem.config import validate as validate_train_config
from ngp_ohem.data.registry import DATASET_DIRS, SCENES
from ngp_ohem.errors import ConfigError


validate(config, schema="../schemas/config.schema.yaml")

REGISTRY = {scene: dataset for dataset, names in SCENES.items() for scene in names}
PROCEDURAL = config["procedural_scenes"]
DOWNLOAD_ROOT = "resources/data"
MARKER = {"blender": "transforms_train.json", "llff": "poses_bounds.npy"}
# Keys of a run's configuration that the workflow sets itself (from methods, seeds, budgets, device).
WORKFLOW_KEYS = ("method", "seed", "budget_s", "device", "threads")


def config_error(key, message):
    return WorkflowError(f"Error validating config file: config key '{key}': {message}")


def check_config():
    """What the JSON schema cannot say: scene names known, budgets present, overrides valid."""
    for i, name in enumerate(config["scenes"]):
        if name not in PROCEDURAL and name not in REGISTRY:
            declared = ", ".join(PROCEDURAL) or "none"
            raise config_error(
                f"scenes[{i}]",
                f"unknown scene '{name}': neither a benchmark scene ({', '.join(REGISTRY)}) nor a procedural "
                f"scene declared under procedural_scenes ({declared})",
            )
    for name in config["scenes"]:
        dataset = scene_dataset(name)
        if dataset not in config["budgets"]:
            raise config_error(f"budgets.{dataset}", f"missing: scene '{name}' is a {dataset} scene")
    for key, overrides in [("train_overrides", config["train_overrides"])] + [
        (f"train_overrides_by_dataset.{d}", o) for d, o in config["train_overrides_by_dataset"].items()
    ]:
        for forbidden in WORKFLOW_KEYS:
            if forbidden in overrides:
                raise config_error(
                    f"{key}.{forbidden}", "set by the workflow (methods, seeds, budgets, device, profile threads)"
                )
        try:
            validate_train_config(deep_merge(DEFAULTS, overrides))
        except ConfigError as err:
            raise config_error(key, str(err)) from None


def scene_dataset(name):
    """'blender' or 'llff' for a benchmark or a procedural scene."""
    return PROCEDURAL[name]["kind"] if name in PROCEDURAL else REGISTRY[name]


def located_dir(name):
    """Folder of a benchmark scene under config data_root, or None when it is not there."""
    dataset = REGISTRY[name]
    folder = Path(config["data_root"]) / DATASET_DIRS[dataset] / name
    return str(folder) if (folder / MARKER[dataset]).is_file() else None


def download_dir(name):
    return f"{DOWNLOAD_ROOT}/{DATASET_DIRS[REGISTRY[name]]}/{name}"


def resolve_scenes():
    """{scene: folder} of the scenes to run; {dataset: [scenes]} to download. Applies missing_data."""
    folders, downloads, missing = {}, {}, []
    for name in config["scenes"]:
        if name in PROCEDURAL:
            folders[name] = f"results/scenes/{name}"
            continue
        found = located_dir(name)
        if found is None and config["missing_data"] != "download" and located_in(DOWNLOAD_ROOT, name):
            found = download_dir(name)
        if found is not None:
            folders[name] = found
        elif config["missing_data"] == "download":
            folders[name] = download_dir(name)
            downloads.setdefault(REGISTRY[name], []).append(name)
        else:
            missing.append(name)
    where = Path(config["data_root"])
    if missing and config["missing_data"] == "error":
        raise config_error(
            "data_root",
            f"scenes {', '.join(missing)} not found under {where} (expected {where}/nerf_synthetic/<scene> or "
            f"{where}/nerf_llff_data/<scene>); set missing_data: download or skip",
        )
    if missing:
        print(f"ngp-ohem workflow: skipping scenes not found under {where}: {', '.join(missing)}", file=sys.stderr)
    if not folders:
        raise config_error("scenes", f"none of the scenes exists under data_root {where}")
    return folders, downloads


def located_in(root, name):
    dataset = REGISTRY[name]
    return (Path(root) / DATASET_DIRS[dataset] / name / MARKER[dataset]).is_file()


check_config()
SCENE_DIRS, DOWNLOADS = resolve_scenes()
RUN_SCENES = list(SCENE_DIRS)
DATASETS = [d for d in ("blender", "llff") if any(scene_dataset(s) == d for s in RUN_SCENES)]
RENDER_SEED = min(config["seeds"])
RUN_PATTERN = "results/runs/{dataset}/{scene}/{method}/seed{seed}"


def run_dirs(dataset=None, seeds=None):
    """Output folders of every run (of one dataset / some seeds)."""
    return [
        RUN_PATTERN.format(dataset=scene_dataset(scene), scene=scene, method=method, seed=seed)
        for scene in RUN_SCENES
        if dataset is None or scene_dataset(scene) == dataset
        for method in config["methods"]
        for seed in (config["seeds"] if seeds is None else seeds)
    ]


def run_files(name):
    return [f"{d}/{name}" for d in run_dirs()]


def download_root(wildcards, output):
    """The data root a download job extracts into: output is <root>/<dataset folder>/<scene>."""
    return str(Path(output[0]).parent.parent)


def regex_alternatives(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


# -- input / params / resources functions --------------------------------------------------------------
def scene_input(wildcards):
    """The scene folder of a run. Benchmark data is read-only input: ancient(), so a folder's mtime
    (e.g. a file added next to the images) never retrains; procedural scenes retrain when regenerated."""
    folder = SCENE_DIRS[wildcards.scene]
    return folder if wildcards.scene in PROCEDURAL else ancient(folder)


def run_budget(wildcards):
    return config["budgets"][wildcards.dataset]


def run_out_dir(wildcards, output):
    return str(Path(output.summary).parent)


PROCEDURAL_DEFAULTS = {"seed": 0, "size": 64, "depth": "standard"}  # as the schema's defaults


def procedural_param(key):
    def get(wildcards):
        entry = PROCEDURAL[wildcards.scene]
        return entry[key] if key in entry else PROCEDURAL_DEFAULTS[key]

    return get


def dataset_overrides(dataset):
    """The run-config overrides every run of a dataset gets (train_overrides, then the dataset's own)."""
    return deep_merge(config["train_overrides"], config["train_overrides_by_dataset"].get(dataset, {}))


def overrides_digest(dataset):
    text = json.dumps(dataset_overrides(dataset), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def train_overrides_for(wildcards):
    return dataset_overrides(wildcards.dataset)


def overrides_file(wildcards):
    """The overrides YAML of a run. Its name carries a digest of its content, so configs that share this
    working directory never rewrite each other's file (which would make their runs look outdated)."""
    return f"results/config/train_overrides_{wildcards.dataset}_{overrides_digest(wildcards.dataset)}.yaml"


def train_threads():
    """A time-budgeted run owns every core Snakemake may use here (never shares them with another job);
    profiles/slurm sets an explicit count with set-threads."""
    try:
        cores = workflow.cores
    except WorkflowError:  # cluster executors without --cores: the profile's set-threads decides
        return 1
    return cores if isinstance(cores, int) and 0 < cores < 4096 else 1


def train_gpus():
    return 1 if config["device"] == "cuda" else 0


def render_inputs(wildcards):
    """PNGs (render + ground truth) of the RENDER_SEED runs of a dataset, and runs.csv for the captions."""
    dirs = run_dirs(wildcards.dataset, seeds=[RENDER_SEED])
    return {
        "runs": "results/runs.csv",
        "renders": [f"{d}/render_test0.png" for d in dirs],
        "gts": [f"{d}/gt_test0.png" for d in dirs],
    }


def package_file(relative):
    """Absolute path of a file of the ngp_ohem.report package (an input, so editing it redoes the job)."""
    return str(Path(ngp_ohem.report.__file__).parent / relative)


def use_this_python_environment():
    """Put the bin folder of the Python running Snakemake first on PATH, so jobs find this environment's
    `ngp-ohem` even when it was not activated (e.g. `.venv/bin/snakemake ...`)."""
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "ngp-ohem").is_file():
        paths = os.environ.get("PATH", "").split(os.pathsep)
        if str(bin_dir) not in paths:
            os.environ.update(PATH=os.pathsep.join([str(bin_dir), *paths]))


use_this_python_environment()
TABLE_NAMES = ngp_ohem.report.TABLE_NAMES
FIGURE_NAMES = ngp_ohem.report.FIGURE_NAMES


def final_outputs():
    """Everything `snakemake` (rule all) builds."""
    return (
        ["results/runs.csv", "results/traces.csv"]
        + [f"results/tables/{t}.{ext}" for t in TABLE_NAMES for ext in ("md", "tex", "html", "csv")]
        + [f"figures/{f}.{ext}" for f in FIGURE_NAMES for ext in ("png", "pdf")]
        + [f"figures/renders_{d}.{ext}" for d in DATASETS for ext in ("png", "pdf")]
    )


wildcard_constraints:
    dataset="blender|llff",
    method="baseline|hsm",
    scene=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed=r"\d+",
    digest=r"[0-9a-f]{10}",


def warn_contended_clocks(runs_csv):
    """At the end of a workflow: name every run whose training clock other processes shared."""
    if not Path(runs_csv).is_file():
        return
    import pandas as pd

    from ngp_ohem.report.aggregate import contended_runs

    bad = contended_runs(pd.read_csv(runs_csv))
    if bad:
        print(
            f"WARNING: {len(bad)} run(s) trained on a contended clock (their equal-time results are not "
            "comparable; rerun them on idle cores, or set train_overrides: {strict_clock: true}):",
            file=sys.stderr,
        )
        for line in bad:
            print(f"  {line}", file=sys.stderr)
