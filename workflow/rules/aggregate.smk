# All finished runs -> results/runs.csv (one row per run) and results/traces.csv (every trace row).


rule aggregate:
    input:
        summaries=run_files("summary.json"),
        traces=run_files("trace.csv"),
        code=package_file("aggregate.py"),
    output:
        runs="results/runs.csv",
        traces="results/traces.csv",
    log:
        "results/logs/aggregate.log",
    script:
        "../scripts/aggregate.py"
