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
from ngp_ohem import strategies
from ngp_ohem.config import DEFAULTS, deep_merge
from ngp_ohem.config import validate as validate_train_config
from ngp_ohem.data.registry import DATASET_DIRS, resolve
from ngp_ohem.errors import ConfigError, DatasetError
from ngp_ohem.names import DATASET_MARKERS, DATASETS, FIGURE_FORMATS, FIGURE_NAMES, TABLE_FORMATS, TABLE_NAMES


validate(config, schema="../schemas/config.schema.yaml")

PROCEDURAL = config["procedural_scenes"]
DOWNLOAD_ROOT = "resources/data"
# Keys of a run's configuration that the workflow sets itself (from methods, seeds, budgets, device).
WORKFLOW_KEYS = ("method", "seed", "budget_s", "device", "threads")


def config_error(key, message):
    return WorkflowError(f"Error validating config file: config key '{key}': {message}")


def scene_key(token):
    """(dataset, scene) of a config scene entry: a procedural scene, 'lego', or 'mipnerf360/room'."""
    if token in PROCEDURAL:
        return PROCEDURAL[token]["kind"], token
    return resolve(token)


def check_config():
    """What the JSON schema cannot say: scene names known, methods registered, budgets present, overrides valid."""
    for i, method in enumerate(config["methods"]):
        if method not in strategies.names():
            raise config_error(
                f"methods[{i}]",
                f"'{method}' is not one of the registered methods ({', '.join(strategies.names())}; ngp_ohem/strategies)",
            )
    keys = {}
    for i, name in enumerate(config["scenes"]):
        try:
            key = scene_key(name)
        except DatasetError as err:
            declared = ", ".join(PROCEDURAL) or "none"
            raise config_error(
                f"scenes[{i}]",
                f"{err}; or a procedural scene declared under procedural_scenes ({declared})",
            ) from None
        if key in keys:
            raise config_error(f"scenes[{i}]", f"'{name}' names the same scene as '{keys[key]}'")
        keys[key] = name
    for name in config["scenes"]:
        dataset = scene_key(name)[0]
        if dataset not in config["budgets"]:
            raise config_error(f"budgets.{dataset}", f"missing: scene '{name}' is a {dataset} scene")
    for name in config["train_overrides_by_scene"]:
        if name not in config["scenes"]:
            raise config_error(
                f"train_overrides_by_scene.{name}", f"not one of the scenes ({', '.join(config['scenes'])})"
            )
    sections = (
        [("train_overrides", config["train_overrides"])]
        + [(f"train_overrides_by_dataset.{d}", o) for d, o in config["train_overrides_by_dataset"].items()]
        + [(f"train_overrides_by_scene.{s}", o) for s, o in config["train_overrides_by_scene"].items()]
    )
    for key, overrides in sections:
        for forbidden in WORKFLOW_KEYS:
            if forbidden in overrides:
                raise config_error(
                    f"{key}.{forbidden}", "set by the workflow (methods, seeds, budgets, device, profile threads)"
                )
        try:
            validate_train_config(deep_merge(DEFAULTS, overrides))
        except ConfigError as err:
            raise config_error(key, str(err)) from None


def located_dir(root, dataset, name):
    """Folder of a benchmark scene under root, or None when it is not there (complete)."""
    folder = Path(root) / DATASET_DIRS[dataset] / name
    return str(folder) if (folder / DATASET_MARKERS[dataset]).is_file() else None


def download_dir(dataset, name):
    return f"{DOWNLOAD_ROOT}/{DATASET_DIRS[dataset]}/{name}"


def resolve_scenes():
    """{(dataset, scene): folder} of the scenes to run; {dataset: [scenes]} to download. Applies missing_data."""
    folders, downloads, missing = {}, {}, []
    for token in config["scenes"]:
        dataset, name = scene_key(token)
        if token in PROCEDURAL:
            folders[dataset, name] = f"results/scenes/{name}"
            continue
        found = located_dir(config["data_root"], dataset, name)
        if found is None and config["missing_data"] != "download":
            found = located_dir(DOWNLOAD_ROOT, dataset, name)
        if found is not None:
            folders[dataset, name] = found
        elif config["missing_data"] == "download":
            folders[dataset, name] = download_dir(dataset, name)
            downloads.setdefault(dataset, []).append(name)
        else:
            missing.append(token)
    where = Path(config["data_root"])
    if missing and config["missing_data"] == "error":
        raise config_error(
            "data_root",
            f"scenes {', '.join(missing)} not found under {where} (expected {where}/<dataset folder>/<scene>, "
            f"the dataset folders being {', '.join(DATASET_DIRS.values())}); set missing_data: download or skip",
        )
    if missing:
        print(f"ngp-ohem workflow: skipping scenes not found under {where}: {', '.join(missing)}", file=sys.stderr)
    if not folders:
        raise config_error("scenes", f"none of the scenes exists under data_root {where}")
    return folders, downloads


check_config()
SCENE_DIRS, DOWNLOADS = resolve_scenes()
RUN_KEYS = list(SCENE_DIRS)  # (dataset, scene) of every scene that runs
TOKENS = {scene_key(token): token for token in config["scenes"]}  # how the config names each
RUN_DATASETS = [d for d in DATASETS if any(dataset == d for dataset, _ in RUN_KEYS)]
RENDER_SEED = min(config["seeds"])
RUN_PATTERN = "results/runs/{dataset}/{scene}/{method}/seed{seed}"


def run_dirs(dataset=None, seeds=None):
    """Output folders of every run (of one dataset / some seeds)."""
    return [
        RUN_PATTERN.format(dataset=d, scene=scene, method=method, seed=seed)
        for d, scene in RUN_KEYS
        if dataset is None or d == dataset
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
    folder = SCENE_DIRS[wildcards.dataset, wildcards.scene]
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


def scene_overrides(dataset, scene):
    """The run-config overrides every run of a scene gets: train_overrides, then its dataset's, then its own
    (train_overrides_by_scene, keyed as the config's scenes list names it: e.g. the authors' 360 bound)."""
    by_dataset = config["train_overrides_by_dataset"].get(dataset, {})
    by_scene = config["train_overrides_by_scene"].get(TOKENS[dataset, scene], {})
    return deep_merge(deep_merge(config["train_overrides"], by_dataset), by_scene)


def digest_of(overrides):
    return hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]


# (dataset, digest) -> overrides: one file per distinct set, shared by the scenes that have it.
OVERRIDE_SETS = {(d, digest_of(scene_overrides(d, s))): scene_overrides(d, s) for d, s in RUN_KEYS}


def train_overrides_for(wildcards):
    return OVERRIDE_SETS[wildcards.dataset, wildcards.digest]


def overrides_file(wildcards):
    """The overrides YAML of a run. Its name carries a digest of its content, so configs that share this
    working directory never rewrite each other's file (which would make their runs look outdated)."""
    digest = digest_of(scene_overrides(wildcards.dataset, wildcards.scene))
    return f"results/config/train_overrides_{wildcards.dataset}_{digest}.yaml"


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


def final_outputs():
    """Everything `snakemake` (rule all) builds."""
    return (
        ["results/runs.csv", "results/traces.csv"]
        + [f"results/tables/{t}.{ext}" for t in TABLE_NAMES for ext in TABLE_FORMATS]
        + [f"figures/{f}.{ext}" for f in FIGURE_NAMES for ext in FIGURE_FORMATS]
        + [f"figures/renders_{d}.{ext}" for d in RUN_DATASETS for ext in FIGURE_FORMATS]
    )


wildcard_constraints:
    dataset="|".join(DATASETS),
    method=regex_alternatives(strategies.names()),
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
