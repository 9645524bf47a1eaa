# Tables 1-3, statistics, figures and the MLflow summary run.


rule tables:
    """Tables 1-3 (LaTeX/CSV/Markdown), statistics over seeds, paired bootstrap."""
    input:
        *run_inputs(TABLE_DATASETS, ("results.json", "per_image_test.csv")),
        selections=selection_files(TABLE_DATASETS),
        reported=REPORTED,
    output:
        table_files(),
        [reported(f, "selection", "Statistics and tests") if f.endswith(".csv") else f
         for f in SEARCH_TABLES],
        html=[reported(f"{RESULTS}/tables/table{n}.html", f"table{n}", "Tables")
              for n in (1, 2, 3)],
        statistics=reported(f"{RESULTS}/tables/statistics.csv", "statistics", "Statistics and tests"),
        bootstrap=reported(f"{RESULTS}/tables/bootstrap.csv", "bootstrap", "Statistics and tests"),
        runs=reported(f"{RESULTS}/tables/runs.csv", "runs", "Statistics and tests"),
    log:
        f"{RESULTS}/logs/tables.log",
    params:
        results=lambda wc, input: results_dir_of(input[0]),
        out=lambda wc, output: os.path.dirname(output[0]),
        roles=" ".join(f"--role {k}={v}" for k, v in config["tables"].items()),
        methods=csv_list(METHODS),
        seeds=csv_list(SEEDS),
        protocols=csv_list(config["protocols"]),
        resamples=EVAL.get("bootstrap_resamples", 10000),
        run_keys=lambda wc: run_key_args(TABLE_DATASETS),
        selections=lambda wc, input: " ".join(f"--selection {f}" for f in input.selections),
    conda:
        "../envs/wsolbench.yaml"
    threads: 1
    shell:
        "wsolbench tables --results-dir {params.results} {params.roles} --methods {params.methods} "
        "--seeds {params.seeds} --protocols {params.protocols} --reported {input.reported} "
        "--resamples {params.resamples} {params.run_keys} {params.selections} "
        "--out {params.out} > {log} 2>&1"


rule figures:
    """Qualitative grid, BoxAcc-vs-threshold curves, error categories of one dataset."""
    input:
        lambda wc: [run_file(wc.dataset, m, s, n) for m in METHODS if m not in SEARCHED
                    for s in SEEDS
                    for n in ("results.json", "per_image_test.csv", "predictions_test.npz")],
        lambda wc: [run_file(wc.dataset, m, s, n) for m in SEARCHED for s in SEEDS
                    for n in ("results.json", "per_image_test.csv", "predictions_test.npz")],
    output:
        [reported(f"{RESULTS}/figures/{{dataset}}/{name}", name.removesuffix(".png"), "Figures",
                  "{dataset}") if name in REPORTED_FIGURES
         else f"{RESULTS}/figures/{{dataset}}/{name}" for name in FIGURE_NAMES],
    log:
        f"{RESULTS}/logs/figures/{{dataset}}.log",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        args=lambda wc: data_args(wc.dataset),
        methods=csv_list(METHODS),
        seeds=csv_list(SEEDS),
        images=EVAL.get("figure_images", 6),
        run_keys=lambda wc: run_key_args([wc.dataset]),
    conda:
        "../envs/wsolbench.yaml"
    threads: 1
    shell:
        "wsolbench figures {params.args} --methods {params.methods} --seeds {params.seeds} "
        "--images {params.images} {params.run_keys} --out {params.out} > {log} 2>&1"


rule summary:
    """One MLflow run (experiment 'summary') holding the tables and figures."""
    input:
        tables=table_files(),
        statistics=f"{RESULTS}/tables/statistics.csv",
        runs=f"{RESULTS}/tables/runs.csv",
        search=SEARCH_TABLES,
        figures=figure_files(),
    output:
        f"{RESULTS}/summary.json",
    log:
        f"{RESULTS}/logs/summary.log",
    params:
        results=lambda wc, output: os.path.dirname(output[0]),
    conda:
        "../envs/wsolbench.yaml"
    threads: 1
    shell:
        "wsolbench summary --results-dir {params.results} --json {output} {input} > {log} 2>&1"
