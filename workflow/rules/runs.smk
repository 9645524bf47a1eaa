# Data preparation and one training + evaluation job per (dataset, method, seed).


rule prepare_data:
    """Read (synth: generate) a dataset once and check its splits before runs start."""
    output:
        f"{RESULTS}/workflow/data/{{dataset}}.json",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    params:
        args=lambda wc: data_args(wc.dataset),
    conda:
        "../envs/wsolbench.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "wsolbench data prepare {params.args} --json {output} > {log} 2>&1"


rule run:
    """Train, localize, evaluate every protocol, log to MLflow (`wsolbench run`).

    `--resume` continues an interrupted job from its last epoch checkpoint when config,
    data and seed are unchanged (a changed job restarts from scratch)."""
    input:
        f"{RESULTS}/workflow/data/{{dataset}}.json",
    output:
        results=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{run_key}}/{{seed}}/results.json",
        per_image=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{run_key}}/{{seed}}/per_image_test.csv",
        predictions=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{run_key}}/{{seed}}/predictions_test.npz",
    log:
        f"{RESULTS}/logs/run/{{dataset}}/{{method}}/{{run_key}}/{{seed}}.log",
    params:
        args=run_args,
    conda:
        "../envs/wsolbench.yaml"
    threads: RES.get("threads", 1)
    resources:
        gpu=RES.get("gpus", 0),
        mem_mb=RES.get("mem_mb", 4000),
        runtime=RES.get("runtime", 60),
    shell:
        "TQDM_DISABLE=1 wsolbench run {params.args} --threads {threads} > {log} 2>&1"


checkpoint select:
    """A method's hyperparameters chosen on train-fullsup (`wsolbench select`): of its
    `search:` grid, the candidate with the highest mean MaxBoxAccV2 over the search seeds
    on the held-out split (wsolevaluation's protocol; docs/search.md). A checkpoint: the
    tables, figures and explainers read which run key it chose, and ask for its runs of
    the remaining seeds."""
    input:
        lambda wc: candidate_files(wc.dataset, wc.method),
    output:
        f"{RESULTS}/selection/{{dataset}}/{{method}}.json",
    log:
        f"{RESULTS}/logs/select/{{dataset}}/{{method}}.log",
    params:
        results=lambda wc, input: results_dir_of(input[0]),
        run_keys=lambda wc: " ".join(f"--run-key {key}"
                                     for key, _ in CANDIDATES[wc.dataset, wc.method]),
        seeds=csv_list(SEARCH_SEEDS),
    conda:
        "../envs/wsolbench.yaml"
    threads: 1
    shell:
        "wsolbench select --results-dir {params.results} --dataset {wildcards.dataset} "
        "--method {wildcards.method} {params.run_keys} --seeds {params.seeds} "
        "--out {output} > {log} 2>&1"
