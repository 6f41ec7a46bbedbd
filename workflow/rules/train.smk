# One time-budgeted training run per (dataset, scene, method, seed).


rule train_overrides:
    output:
        "results/config/train_overrides_{dataset}_{digest}.yaml",
    params:
        overrides=train_overrides_for,
    log:
        "results/logs/config/train_overrides_{dataset}_{digest}.log",
    script:
        "../scripts/train_overrides.py"


rule train:
    input:
        data=scene_input,
        overrides=overrides_file,
    output:
        summary=f"{RUN_PATTERN}/summary.json",
        trace=f"{RUN_PATTERN}/trace.csv",
        render=f"{RUN_PATTERN}/render_test0.png",
        gt=f"{RUN_PATTERN}/gt_test0.png",
    params:
        out=run_out_dir,
        budget=run_budget,
        device=config["device"],
        preset=config["preset"],
    # A wall-clock budget must not share cores or a GPU: by default a run takes every core Snakemake
    # was given (train_threads), profiles/default also caps train_slot=1 and gpu=1. --pin-cores pins
    # each run to cores no other run holds, so runs that do go side by side (--set-threads train=1
    # --resources train_slot=2) never share one.
    threads: train_threads()
    resources:
        train_slot=1,
        gpu=train_gpus(),
    log:
        "results/logs/train/{dataset}/{scene}/{method}/seed{seed}.log",
    message:
        "training {wildcards.scene} ({wildcards.dataset}) {wildcards.method} seed {wildcards.seed}: "
        "{params.budget} s on {params.device}, {threads} threads"
    shell:
        "ngp-ohem train --data {input.data} --method {wildcards.method} --seed {wildcards.seed} "
        "--budget {params.budget} --device {params.device} --preset {params.preset} "
        "--config {input.overrides} --threads {threads} --pin-cores --out {params.out} --quiet > {log} 2>&1"
