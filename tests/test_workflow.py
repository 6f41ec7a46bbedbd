"""The Snakemake workflow: lint, config validation, and dry-runs of the shipped configs (nothing is trained).

Every dry-run works in a fresh temporary directory (--directory), so results already in the repository
never make a planned job disappear. The Snakemake invocations are started together by one fixture
(each spends most of its ~3 s importing), and the tests read their results.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ngp_ohem import strategies
from ngp_ohem.data.registry import BLENDER_SCENES, LLFF_SCENES, MIPNERF360_SCENES, SCENES

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

pytestmark = pytest.mark.skipif(
    not SNAKEMAKE.is_file() and shutil.which("snakemake") is None, reason="snakemake is not installed"
)

# The only lint we accept: per-rule conda/container environments. The suite runs in one software
# environment (the project's venv / environment.yml: pinned torch, a C++ extension built per machine);
# a per-rule conda env would duplicate a multi-GB torch install for every rule without pinning more.
ACCEPTED_LINTS = {"Specify a conda environment or container for each rule."}


def snakemake(*args: str, workdir: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = str(SNAKEMAKE) if SNAKEMAKE.is_file() else "snakemake"
    cmd = [exe, "--snakefile", str(REPO / "Snakefile")]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> Counter[str]:
    """The 'Job stats' table of a dry-run."""
    block = output.split("Job stats:", 1)[1]
    counts: Counter[str] = Counter()
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(tmp_path: Path, base: str, **changes: object) -> Path:
    config = yaml.safe_load((REPO / "config" / base).read_text())
    config.update(changes)
    path = tmp_path / f"bad-{base}"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_data_root(root: Path, scenes: tuple[str, ...] = BLENDER_SCENES + LLFF_SCENES, dataset: str = "") -> Path:
    """Marker files only: enough for the workflow to locate (not to load) each scene."""
    for scene in scenes:
        if dataset == "mipnerf360":
            folder, marker = root / "360_v2" / scene, "sparse/0/cameras.bin"
        elif scene in BLENDER_SCENES:
            folder, marker = root / "nerf_synthetic" / scene, "transforms_train.json"
        else:
            folder, marker = root / "nerf_llff_data" / scene, "poses_bounds.npy"
        (folder / marker).parent.mkdir(parents=True)
        (folder / marker).write_text("")
    return root


BAD_CONFIGS = {
    "negative-budget": ({"budgets": {"blender": -5, "llff": 25}}, r"budgets.*blender.*-5|-5.*budgets"),
    "unknown-method": ({"methods": ["baseline", "ohem"]}, r"'ohem' is not one of.*methods"),
    "unknown-scene": ({"scenes": ["toy_blender", "legoo"]}, r"scenes\[1\].*unknown scene 'legoo'"),
    "negative-seed": ({"seeds": [0, -1]}, r"seeds"),
    "bad-override": ({"train_overrides": {"eval": {"final_views": -2}}}, r"train_overrides.*final_views"),
    "workflow-key": ({"train_overrides": {"budget_s": 5}}, r"train_overrides\.budget_s"),
    "ambiguous-scene": ({"scenes": ["toy_blender", "room"]}, r"scenes\[1\].*write llff/room or mipnerf360/room"),
    "same-scene-twice": ({"scenes": ["garden", "mipnerf360/garden"]}, r"scenes\[1\].*same scene as 'garden'"),
    "by-scene-unknown": ({"train_overrides_by_scene": {"lego": {"bound": 2}}}, r"train_overrides_by_scene\.lego"),
    "by-scene-bad-bound": (
        {"train_overrides_by_scene": {"toy_llff": {"bound": 0}}},
        r"train_overrides_by_scene\.toy_llff.*bound",
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every Snakemake invocation of this module, run concurrently, by name."""
    tmp = tmp_path_factory.mktemp("workflow")
    config = REPO / "config"
    calls: dict[str, tuple[str, ...]] = {}
    work: dict[str, Path] = {}
    calls["lint"] = ("--lint", "--configfile", str(config / "paper.yaml"))
    for name, (changes, _) in BAD_CONFIGS.items():
        folder = tmp / name
        folder.mkdir()
        calls[name] = ("-n", "--configfile", str(write_config(folder, "config.yaml", **changes)))
    full_root = fake_data_root(tmp / "data-all")
    calls["paper"] = ("-n", "--configfile", str(config / "paper.yaml"), "--config", f"data_root={full_root}")
    calls["paper-download"] = ("-n", "--configfile", str(config / "paper.yaml"))
    root_360 = fake_data_root(tmp / "data-360", MIPNERF360_SCENES, dataset="mipnerf360")
    calls["paper-360"] = ("-n", "--configfile", str(config / "paper_360.yaml"), "--config", f"data_root={root_360}")
    calls["paper-360-download"] = ("-n", "--configfile", str(config / "paper_360.yaml"))
    some_root = fake_data_root(tmp / "data-some", ("lego", "fern"))
    calls["cpu"] = ("-n", "--configfile", str(config / "cpu.yaml"), "--config", f"data_root={some_root}")
    calls["arena"] = ("-n", "--configfile", str(config / "arena.yaml"), "--config", f"data_root={some_root}")
    calls["default"] = ("-n", "--configfile", str(config / "config.yaml"))
    csv_only = tmp / "csv-only"
    (csv_only / "results").mkdir(parents=True)
    for name in ("runs.csv", "traces.csv"):
        (csv_only / "results" / name).write_text("x\n")
    work["csv-only"] = csv_only
    calls["csv-only"] = ("-n", "tables", "figures", "--configfile", str(config / "ci.yaml"))
    for name in calls:
        if name != "lint":
            work.setdefault(name, tmp / f"work-{name}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(snakemake, *args, workdir=work.get(name)) for name, args in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def test_lint_is_clean_but_for_software_environments(results: dict) -> None:
    text = results["lint"].stdout + results["lint"].stderr
    assert "Lints for" in text, text  # the linter ran
    titles = set(re.findall(r"^\s+\* (.+?):?$", text, flags=re.MULTILINE))
    assert titles <= ACCEPTED_LINTS, text


def test_schema_scene_enum_matches_the_registry() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    every_name = list(dict.fromkeys(n for names in SCENES.values() for n in names))
    assert schema["$defs"]["benchmark_scene"]["enum"] == every_name
    assert set(schema["properties"]["budgets"]["properties"]) == set(SCENES)


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_fails_before_any_job(results: dict, case: str) -> None:
    result = results[case]
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "Error validating config file" in text, text
    assert re.search(BAD_CONFIGS[case][1], text, flags=re.DOTALL), text
    assert "Job stats" not in text


def test_paper_config_plans_96_runs_with_data_on_disk(results: dict) -> None:
    result = results["paper"]
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 16 * 2 * 3
    assert not any(job.startswith("download") for job in counts)
    assert counts["renders"] == 2 and counts["tables"] == 1 and counts["figures"] == 1
    assert "--device cuda --preset paper" in result.stdout
    assert re.search(r"nerf_synthetic/lego --method \w+ --seed \d --budget 240 ", result.stdout)
    assert re.search(r"nerf_llff_data/trex --method \w+ --seed \d --budget 480 ", result.stdout)


def test_paper_config_downloads_missing_data_once_per_dataset(results: dict) -> None:
    result = results["paper-download"]
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 96
    assert counts["download_blender"] == 1 and counts["download_llff"] == 1
    assert "resources/data/nerf_llff_data/fern" in result.stdout


def test_cpu_config_keeps_only_scenes_under_data_root(results: dict) -> None:
    result = results["cpu"]
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["train"] == 2 * 2 * 3
    assert "skipping scenes not found" in result.stderr


def test_default_config_full_dry_run(results: dict) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    result = results["default"]
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    n_runs = len(config["scenes"]) * len(config["methods"]) * len(config["seeds"])
    assert counts == Counter({
        "make_scene": len(config["procedural_scenes"]), "train_overrides": 2, "train": n_runs, "aggregate": 1,
        "tables": 1, "figures": 1, "renders": 2, "all": 1,
    })  # fmt: skip
    assert "ngp-ohem make-scene --kind llff" in result.stdout
    assert result.stdout.count("--pin-cores") == n_runs  # concurrent runs never share a core


def test_tables_and_figures_need_only_the_csvs(results: dict) -> None:
    """With results/*.csv present and no run folder at all, `snakemake tables figures` plans no training."""
    result = results["csv-only"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(job_counts(result.stdout)) <= {"tables", "figures"}


# The authors' runall_360_ngp.sh (nokia/ashawkey-torch-ngp@8fa4fbe, lines 2-8 and 11-17): --downscale, --bound.
AUTHORS_360 = {
    "room": (4, 8), "bonsai": (4, 8), "kitchen": (4, 8), "counter": (4, 8),
    "garden": (8, 16), "stump": (8, 16), "bicycle": (8, 16),
}  # fmt: skip


def test_paper_360_config_holds_the_authors_per_scene_settings() -> None:
    config = yaml.safe_load((REPO / "config" / "paper_360.yaml").read_text())
    by_scene = {name.rpartition("/")[2]: o for name, o in config["train_overrides_by_scene"].items()}
    assert {name: (o["downscale"], o["bound"]) for name, o in by_scene.items()} == AUTHORS_360
    assert sorted(name.rpartition("/")[2] for name in config["scenes"]) == sorted(MIPNERF360_SCENES)
    assert config["budgets"] == {"mipnerf360": 240} and config["preset"] == "paper"


def test_paper_360_config_plans_7_scenes_2_arms_3_seeds(results: dict) -> None:
    result = results["paper-360"]
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 7 * 2 * 3
    assert not any(job.startswith("download") for job in counts)
    assert counts["train_overrides"] == 2  # indoor (images_4, bound 8) and outdoor (images_8, bound 16)
    assert counts["renders"] == 1 and counts["tables"] == 1
    runs = set(re.findall(r"results/runs/mipnerf360/(\w+)/(baseline|hsm)/seed(\d)/summary\.json", result.stdout))
    assert runs == {(s, m, str(seed)) for s in MIPNERF360_SCENES for m in ("baseline", "hsm") for seed in range(3)}
    assert re.search(r"360_v2/garden --method \w+ --seed \d --budget 240 --device cuda --preset paper", result.stdout)


def test_arena_config_plans_every_registered_arm_on_the_scenes_found(results: dict) -> None:
    result = results["arena"]
    assert result.returncode == 0, result.stderr
    runs = set(re.findall(r"results/runs/\w+/(lego|fern)/(\w+)/seed(\d)/summary\.json", result.stdout))
    arms = strategies.names()
    assert len(arms) >= 5
    assert runs == {(s, m, str(seed)) for s in ("lego", "fern") for m in arms for seed in range(3)}
    assert job_counts(result.stdout)["train"] == 2 * len(arms) * 3


def test_paper_360_config_downloads_the_archive_once(results: dict) -> None:
    result = results["paper-360-download"]
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 42 and counts["download_mipnerf360"] == 1
    command = "ngp-ohem download --dataset mipnerf360 --data-root resources/data --scenes " + " ".join(
        MIPNERF360_SCENES
    )
    assert command in result.stdout
    assert "--data resources/data/360_v2/room " in result.stdout
