# Post-hoc explainers on the trained runs (`explainers:` in the config) and the pretraining
# of the synthetic backbones. Neither is part of `all`.


rule explain:
    """One explainer on one trained run's checkpoint (`wsolbench explain`; the CLI takes
    several at once, the workflow runs one job per explainer)."""
    input:
        lambda wc: run_file(wc.dataset, wc.method, wc.seed),
    output:
        results=f"{RESULTS}/runs/{{dataset}}/{{explainer}}@{{method}}/{{run_key}}/{{seed}}/results.json",
        per_image=f"{RESULTS}/runs/{{dataset}}/{{explainer}}@{{method}}/{{run_key}}/{{seed}}/per_image_test.csv",
    log:
        f"{RESULTS}/logs/explain/{{dataset}}/{{explainer}}@{{method}}/{{run_key}}/{{seed}}.log",
    wildcard_constraints:
        explainer="|".join(map(re.escape, EXPLAINERS)) or "^$",
    params:
        checkpoint=lambda wc, input: os.path.join(os.path.dirname(input[0]), "checkpoint.pt"),
        args=lambda wc: data_args(wc.dataset),
        interval=EVAL.get("cam_curve_interval", 0.001),
        skip=" ".join(f"--skip-protocol {name}" for name in EVAL.get("skip_protocols", [])),
    conda:
        "../envs/wsolbench.yaml"
    threads: RES.get("threads", 1)
    shell:
        "TQDM_DISABLE=1 wsolbench explain --checkpoint {params.checkpoint} {params.args} "
        "--method {wildcards.explainer} --cam-curve-interval {params.interval} "
        "--eval-workers 1 {params.skip} > {log} 2>&1"


rule explainer_tables:
    """Tables 1-2 and statistics of the trained methods and the explainers of their
    checkpoints, side by side (results/tables/explainers/<dataset>/)."""
    input:
        lambda wc: [explainer_file(wc.dataset, e, m, s, n) for e in EXPLAINERS
                    for m in EXPLAINED for s in SEEDS
                    for n in ("results.json", "per_image_test.csv")],
        lambda wc: [run_file(wc.dataset, m, s) for m in EXPLAINED for s in SEEDS],
        reported=REPORTED,
    output:
        table=f"{RESULTS}/tables/explainers/{{dataset}}/table2.md",
        statistics=f"{RESULTS}/tables/explainers/{{dataset}}/statistics.csv",
        bootstrap=f"{RESULTS}/tables/explainers/{{dataset}}/bootstrap.csv",
    log:
        f"{RESULTS}/logs/explainer_tables/{{dataset}}.log",
    params:
        out=lambda wc, output: os.path.dirname(output.table),
        results=lambda wc, input: results_dir_of(input[0]),
        methods=lambda wc: csv_list(explainer_table_methods(wc.dataset)),
        run_keys=lambda wc: explainer_key_args(wc.dataset),
        seeds=csv_list(SEEDS),
        resamples=EVAL.get("bootstrap_resamples", 10000),
    conda:
        "../envs/wsolbench.yaml"
    shell:
        "wsolbench tables --results-dir {params.results} --role cub={wildcards.dataset} "
        "--methods {params.methods} --seeds {params.seeds} --protocols wsolevaluation,fair "
        "--reported {input.reported} --resamples {params.resamples} {params.run_keys} "
        "--out {params.out} > {log} 2>&1"


rule explainers:
    """Target: the explainer tables of every `explainers.datasets` entry."""
    input:
        [f"{RESULTS}/tables/explainers/{d}/table2.md" for d in EXPLAIN_DATASETS],


rule pretrain:
    """`wsolbench pretrain` of one synth backbone (smallcnn or vit_synth) into
    results/pretrain/; the shipped copies in wsolbench/weights/ came from the same command
    (docs/benchmark.md). Target: `snakemake --cores 2 results/pretrain/vit_synth.safetensors`."""
    output:
        weights=f"{RESULTS}/pretrain/{{backbone}}.safetensors",
        manifest=f"{RESULTS}/pretrain/{{backbone}}.json",
    log:
        f"{RESULTS}/logs/pretrain/{{backbone}}.log",
    wildcard_constraints:
        backbone="smallcnn|vit_synth",
    params:
        results=lambda wc, output: os.path.dirname(os.path.dirname(output.weights)),
    conda:
        "../envs/wsolbench.yaml"
    threads: RES.get("threads", 1)
    shell:
        "TQDM_DISABLE=1 wsolbench pretrain --backbone {wildcards.backbone} "
        "--out {output.weights} --results-dir {params.results} --threads {threads} > {log} 2>&1"
