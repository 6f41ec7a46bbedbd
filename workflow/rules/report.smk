# Tables and figures: pure functions of results/runs.csv and results/traces.csv (plus the code that
# draws them), so `snakemake tables` / `snakemake figures` never need a run folder. Only the render
# comparison reads the runs' PNGs.


rule tables:
    input:
        runs="results/runs.csv",
        traces="results/traces.csv",
        code=package_file("tables.py"),
    output:
        quality_md="results/tables/quality.md",
        quality_tex="results/tables/quality.tex",
        quality_csv="results/tables/quality.csv",
        quality_html=report(
            "results/tables/quality.html", caption="../report/table_quality.rst", category="Tables"
        ),
        speedup_md="results/tables/speedup.md",
        speedup_tex="results/tables/speedup.tex",
        speedup_csv="results/tables/speedup.csv",
        speedup_html=report(
            "results/tables/speedup.html", caption="../report/table_speedup.rst", category="Tables"
        ),
        memory_md="results/tables/memory.md",
        memory_tex="results/tables/memory.tex",
        memory_csv="results/tables/memory.csv",
        memory_html=report("results/tables/memory.html", caption="../report/table_memory.rst", category="Tables"),
        hard_md="results/tables/hard_fraction.md",
        hard_tex="results/tables/hard_fraction.tex",
        hard_csv="results/tables/hard_fraction.csv",
        hard_html=report(
            "results/tables/hard_fraction.html", caption="../report/table_hard_fraction.rst", category="Tables"
        ),
    params:
        fractions=config["budget_fractions"],
    log:
        "results/logs/tables.log",
    script:
        "../scripts/tables.py"


rule figures:
    input:
        runs="results/runs.csv",
        traces="results/traces.csv",
        code=package_file("figures.py"),
    output:
        psnr=report("figures/psnr_vs_time.png", caption="../report/fig_psnr.rst", category="Figures"),
        psnr_pdf="figures/psnr_vs_time.pdf",
        mean_psnr=report(
            "figures/mean_psnr_vs_time.png", caption="../report/fig_mean_psnr.rst", category="Figures"
        ),
        mean_psnr_pdf="figures/mean_psnr_vs_time.pdf",
        memory=report("figures/memory_vs_time.png", caption="../report/fig_memory.rst", category="Figures"),
        memory_pdf="figures/memory_vs_time.pdf",
        hard=report(
            "figures/hard_fraction_vs_time.png", caption="../report/fig_hard_fraction.rst", category="Figures"
        ),
        hard_pdf="figures/hard_fraction_vs_time.pdf",
    params:
        log_x=True,
    log:
        "results/logs/figures.log",
    script:
        "../scripts/figures.py"


rule renders:
    input:
        unpack(render_inputs),
        code=package_file("figures.py"),
    output:
        png=report(
            "figures/renders_{dataset}.png",
            caption="../report/fig_renders.rst",
            category="Renders",
            labels={"dataset": "{dataset}"},
        ),
        pdf="figures/renders_{dataset}.pdf",
    params:
        seed=RENDER_SEED,
    log:
        "results/logs/renders_{dataset}.log",
    script:
        "../scripts/renders.py"
