# Scene data: procedural scenes are generated, benchmark scenes are located under config["data_root"]
# or (missing_data: download) fetched into resources/data by `ngp-ohem download`.


rule make_scene:
    output:
        directory("results/scenes/{scene}"),
    wildcard_constraints:
        scene=regex_alternatives(list(PROCEDURAL)),
    params:
        kind=procedural_param("kind"),
        seed=procedural_param("seed"),
        size=procedural_param("size"),
        depth=procedural_param("depth"),
    log:
        "results/logs/scenes/{scene}.log",
    message:
        "procedural {params.kind} scene {wildcards.scene}"
    shell:
        "ngp-ohem make-scene --kind {params.kind} --seed {params.seed} --size {params.size} "
        "--depth {params.depth} --out {output} > {log} 2>&1"


# One download job per dataset (one archive), extracting every scene of it that the config needs:
# per-scene jobs would fetch the same archive concurrently.
for _dataset, _scenes in DOWNLOADS.items():

    rule:
        name:
            f"download_{_dataset}"
        output:
            [directory(download_dir(_dataset, s)) for s in _scenes],
        params:
            dataset=_dataset,
            root=download_root,
            scenes=" ".join(_scenes),
        log:
            f"results/logs/download/{_dataset}.log",
        message:
            "downloading {params.dataset} scenes {params.scenes} into {params.root}"
        shell:
            "ngp-ohem download --dataset {params.dataset} --data-root {params.root} "
            "--scenes {params.scenes} > {log} 2>&1"
