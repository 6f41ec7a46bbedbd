# ngp-ohem benchmark: Instant-NGP (baseline) vs. Instant-NGP with online hard sample mining (hsm) under
# fixed wall-clock training budgets.
#
#   snakemake --cores all                                   # embedded default: procedural scenes, CPU
#   snakemake --cores all --configfile config/ci.yaml       # quicker variant for CI
#   snakemake --configfile config/paper.yaml                # 16 scenes x 2 methods x 3 seeds on a GPU
#   snakemake --configfile config/cpu.yaml --config data_root=../shared/data
#   snakemake --configfile config/arena.yaml --config data_root=../shared/data  # every arm of ngp_ohem/strategies
#   snakemake tables | figures                              # re-derive from results/*.csv only
#   snakemake --report report.html                          # (same --configfile as the run)
#
# Each file under config/ is a complete experiment: when --configfile is given, config/config.yaml is
# NOT merged underneath (Snakemake's `configfile:` would merge nested mappings such as train_overrides
# of the default into a paper run). --config key=value still overrides single keys.
# Outputs go to results/, figures/ and resources/ of the working directory: give each experiment its
# own (`--directory DIR`), since e.g. paper.yaml and cpu.yaml both train lego into
# results/runs/blender/lego/<method>/seed<N>/ (a budget change retrains, it never mixes).
# Threads, resources and executors live in profiles/ (see profiles/README.md).

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    warn_contended_clocks("results/runs.csv")
