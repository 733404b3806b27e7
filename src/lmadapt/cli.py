"""The `lmadapt` command. Each subcommand parses arguments and calls one plain function.

Heavy imports (torch, transformers) stay inside the commands so `lmadapt --help` is instant.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer
from rich.console import Console

from .errors import LmadaptError

app = typer.Typer(
    help="Adapt pretrained language models to your task, from one YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and pull pretrained models into the cache.", no_args_is_help=True)
data_app = typer.Typer(help="List and pull datasets into the cache.", no_args_is_help=True)
recipes_app = typer.Typer(help="Check, list and copy recipes.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(recipes_app, name="recipes")
console = Console()
# The shipped recipes are package data, lmadapt/recipes/**/*.yaml, read with importlib.resources.
RECIPES_DIR = "recipes"


def shipped_recipes() -> dict:
    """Shipped recipe name (`pubmed-mesh-lora`, `compare-flagship/lora`) -> its importlib.resources file."""
    from importlib.resources import files

    found = {}
    folders = [(files("lmadapt") / RECIPES_DIR, "")]
    while folders:
        folder, prefix = folders.pop()
        for item in folder.iterdir():
            if item.is_dir():
                folders.append((item, f"{prefix}{item.name}/"))
            elif item.name.endswith(".yaml"):
                found[prefix + item.name.removesuffix(".yaml")] = item
    return dict(sorted(found.items()))


def friendly(fn):
    """Turn LmadaptError into a red message and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LmadaptError as exc:
            from rich.markup import escape

            from .utils import distributed

            if not distributed.is_main():  # rank 0 meets the same recipe and data, and says it once
                sys.exit(2)

            # the message is shown as is: a field name such as "[/x]" must not be read as markup
            Console(stderr=True).print(
                f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False
            )
            sys.exit(2)

    return wrapper


# ---------------------------------------------------------------- recipes
@recipes_app.command("check")
@friendly
def recipes_check(recipe: Path, overrides: list[str] = typer.Argument(None, help="dotted.key=value")):
    """Validate a recipe and print it fully resolved."""
    from .config import load_recipe, recipe_to_yaml

    console.print(recipe_to_yaml(load_recipe(recipe, overrides)), highlight=False)


@recipes_app.command("list")
def recipes_list():
    """List the shipped recipes (`folder/name` for those in a folder, e.g. compare-flagship/lora)."""
    for name in shipped_recipes():
        console.print(name, highlight=False)


@recipes_app.command("cp")
@friendly
def recipes_cp(name: str, dest: Path):
    """Copy a shipped recipe (a name from `lmadapt recipes list`) to DEST, a file or a folder."""
    import difflib

    from .utils.io import write_text

    recipes = shipped_recipes()
    src = recipes.get(name.removeprefix("recipes/").removesuffix(".yaml"))
    if src is None:
        close = difflib.get_close_matches(name, list(recipes), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LmadaptError(f"no shipped recipe {name!r}; {hint}see `lmadapt recipes list`")
    if dest.is_dir():  # `lmadapt recipes cp compare-flagship/lora .` -> ./lora.yaml
        dest = dest / src.name
    write_text(dest, src.read_text(encoding="utf-8"))
    console.print(f"wrote {dest}")


# ---------------------------------------------------------------- train
@app.command()
@friendly
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. train.lr=1e-4"),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the interrupted run of this recipe from its last verified checkpoint.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Train data-parallel in N processes on this machine (torchrun; gloo on CPU, NCCL on GPU). "
        "Each trains train.batch_size examples a step. Several machines: see the README's Scale section.",
    ),
):
    """Run the recipe's stage (finetune, sft, prompt, ...) and write its run folder.

    The folder appears only when the run is complete; until then it is written as .NAME.incomplete beside it.
    """
    from .config import load_recipe
    from .config.auto import recipe_stage
    from .stages import run_stage
    from .utils import distributed

    stage = next((o.partition("=")[2] for o in overrides or [] if o.partition("=")[0] == "stage"), None)
    if (stage or recipe_stage(recipe)) == "auto":
        if nproc != 1 or resume:
            raise LmadaptError(
                f"{recipe}: stage auto: --nproc and --resume do not apply (re-run to continue)"
            )
        _auto_recipe(recipe, overrides)
        return
    loaded = load_recipe(recipe, overrides)
    if nproc != 1 and distributed.world_size() == 1:  # the launcher: check once, then start N workers
        from .launch import check_data_parallel, launch, threads_per_process

        check_data_parallel(loaded, nproc)
        args = [str(recipe), *(overrides or []), *(["--resume"] if resume else [])]
        raise typer.Exit(launch(args, nproc, threads_per_process(nproc, loaded.train.num_threads)))
    if distributed.world_size() > 1:  # under torchrun, started by --nproc or by hand
        from .launch import check_data_parallel

        check_data_parallel(loaded, distributed.world_size())
    distributed.init()
    try:
        run_dir = run_stage(loaded, resume=resume)
    except distributed.WorkerDone:  # a rank other than 0: rank 0 finishes and writes the run folder
        return
    finally:
        distributed.finish()
    console.print(f"run folder: {run_dir}")


# ---------------------------------------------------------------- commands added by each feature below
@app.command()
@friendly
def rank(
    recipe: Path = typer.Argument(..., help="Recipe YAML with a rank: section (see recipes/align/)."),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. rank.k=4"),
):
    """Sample K answers per prompt from a policy and rank them (a person, an rm run or a task metric);
    appends to rank.output, skipping prompts ranked already. `stage: rm` trains on the file."""
    from .alignment.rank import rank as rank_prompts
    from .config import load_recipe

    out = rank_prompts(load_recipe(recipe, overrides))
    console.print(f"rankings: {out}")


# ---------------------------------------------------------------- synth
@app.command()
@friendly
def synth(
    config: Path = typer.Argument(..., help="Synth config YAML (see recipes/synth/)."),
    overrides: list[str] = typer.Argument(None, help="dotted.key=value overrides, e.g. target=50"),
):
    """Generate instruction data from seed tasks (Self-Instruct or Alpaca style); resumable."""
    from .synth import load_synth_config, run_synth

    out = run_synth(load_synth_config(config, overrides))
    console.print(f"synth output: {out} (alpaca.jsonl, stats.md)")


# ---------------------------------------------------------------- models / data (sources)
@models_app.command("list")
@friendly
def models_list():
    """List the catalog models and whether each is pulled."""
    from .sources import list_models
    from .sources.report import catalog_table

    console.print(catalog_table(list_models(), "models"))


@models_app.command("pull")
@friendly
def models_pull(name: str = typer.Argument(..., help="Catalog name, see `lmadapt models list`.")):
    """Fetch and convert a model into the cache (a no-op when pulled already); print its manifest."""
    from .sources import pull_model, read_manifest
    from .sources.report import manifest_tables

    folder = pull_model(name)
    console.print(*manifest_tables(read_manifest(folder)))
    console.print(f"folder: {folder}", highlight=False)


@data_app.command("list")
@friendly
def data_list():
    """List the catalog datasets and whether each is pulled."""
    from .sources import list_datasets
    from .sources.report import catalog_table

    console.print(catalog_table(list_datasets(), "datasets"))


@data_app.command("pull")
@friendly
def data_pull(name: str = typer.Argument(..., help="Catalog name, see `lmadapt data list`.")):
    """Fetch and convert a dataset into JSONL splits (a no-op when pulled already); print its counts."""
    from .sources import pull_dataset, read_manifest
    from .sources.report import manifest_tables

    folder = pull_dataset(name)
    console.print(*manifest_tables(read_manifest(folder)))
    console.print(f"folder: {folder}", highlight=False)


# ---------------------------------------------------------------- compare
@app.command()
@friendly
def compare(
    recipes: list[Path] = typer.Argument(..., help="Recipes, finished run folders, or folders of either."),
    grid: list[str] = typer.Option(None, "--grid", help="dotted.key=v1,v2 (repeatable): one run each."),
    output: Path = typer.Option(Path("runs/compare"), "--output", help="Folder for runs and leaderboard."),
    metric: str = typer.Option(None, "--metric", help="Sort by this metric (default f1_macro)."),
):
    """Run (or reuse) each configuration, then write a leaderboard (md, csv, json, png)."""
    from .compare import run_compare

    board = run_compare(recipes, grid or [], output, metric)
    console.print(board.read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"leaderboard: {board} (.csv, .json, .png beside it)")


# ---------------------------------------------------------------- predict
@app.command()
@friendly
def predict(
    run_dir: Path = typer.Argument(..., help="A finished finetune run folder."),
    input: Path = typer.Option(..., "--input", help="Records to predict (.jsonl .json .csv .tsv .parquet)."),
    output: Path = typer.Option(..., "--output", help="Predictions file: .jsonl or .csv."),
    submission: Path = typer.Option(None, "--submission", help="Also write an id,label CSV."),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run the model's own Python code (a run folder never turns this on).",
    ),
):
    """Predict labels/tags/keywords/spans for new records with a finetune run's model."""
    from .predict import predict_file

    n = predict_file(run_dir, input, output, submission, trust_remote_code)
    console.print(f"wrote {n} predictions to {output}" + (f" and {submission}" if submission else ""))


# ---------------------------------------------------------------- data check (readers)
@data_app.command("check")
@friendly
def data_check(
    file: Path = typer.Argument(..., help="A .jsonl .json .csv .tsv or .parquet file."),
    shape: str = typer.Option(None, "--shape", help="Validate as this record shape, e.g. classify, alpaca."),
):
    """Read and validate a data file; print its record count and fields (exit 2 on a bad record)."""
    from .data import check_file, summary_lines

    for line in summary_lines(check_file(file, shape)):
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # paths stay whole


# ---------------------------------------------------------------- sft: export / generate / chat
@app.command()
@friendly
def export(
    run_dir: Path = typer.Argument(..., help="A finished sft, ppo, dpo or grpo run folder."),
    output: Path = typer.Option(
        ..., "--output", help="New folder (safetensors, ollama) or new FILE.gguf (gguf)."
    ),
    format: str = typer.Option(
        "safetensors",
        "--format",
        help="safetensors: merged model + tokenizer folder; gguf: one GGUF file (weights, tokenizer, chat "
        "template) for llama.cpp; ollama: model.gguf + a Modelfile for `ollama create`.",
    ),
    quant: str = typer.Option(
        None,
        "--quant",
        help="gguf / ollama tensor type: f16 (default), bf16, q8_0, or q4_k_m (needs llama.cpp's "
        "llama-quantize).",
    ),
    llama_quantize: Path = typer.Option(
        None, "--llama-quantize", help="With --quant q4_k_m: the llama-quantize program (default: on PATH)."
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run the model's own Python code (a run folder never turns this on).",
    ),
):
    """Export a run's model: merged safetensors folder, GGUF file (llama.cpp's converter) or Ollama folder."""
    from .export import export as export_model

    path = export_model(run_dir, output, format, quant, trust_remote_code, llama_quantize)
    console.print(f"exported to {path}", highlight=False, markup=False, soft_wrap=True)


@app.command()
@friendly
def generate(
    model: str = typer.Argument(..., help="Catalog name, model folder, .gguf, Hub id or sft run folder."),
    input: Path = typer.Option(..., "--input", help="Records with prompt, messages or instruction."),
    output: Path = typer.Option(..., "--output", help="JSONL: each record plus its `output`."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    top_k: int = typer.Option(0, "--top-k", help="0: no top-k filtering."),
    num_beams: int = typer.Option(1, "--num-beams"),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty"),
    stop: list[str] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run the model's own Python code (a run folder never turns this on).",
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="auto (bfloat16 where the CPU has native bf16 matmuls, else float32), float32 or bfloat16.",
    ),
    server: str = typer.Option(
        None, "--server", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1."
    ),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="With --server: env variable holding the key."
    ),
):
    """Generate one output per input record with the inference engine, or through an OpenAI-compatible
    server with --server (then MODEL is the server's model name)."""
    from .infer.batch import generate_file

    if server:
        return _generate_via_server(server, model, input, output, api_key_env, max_new_tokens, sample,
                                    temperature, top_p, top_k, num_beams, repetition_penalty, stop, seed)  # fmt: skip
    n = generate_file(
        model, input, output, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=sample,
        temperature=temperature, top_p=top_p, top_k=top_k, num_beams=num_beams,
        repetition_penalty=repetition_penalty, stop=stop or None, seed=seed,
        trust_remote_code=trust_remote_code, dtype=dtype,
    )  # fmt: skip
    console.print(f"wrote {n} outputs to {output}")


def _generate_via_server(server, model, input, output, api_key_env, max_new_tokens, sample, temperature,
                         top_p, top_k, num_beams, repetition_penalty, stop, seed):  # fmt: skip
    from .errors import RecipeError
    from .synth.backends import generate_file_via_server

    unsent = [f for f, on in (("--top-k", top_k), ("--num-beams", num_beams != 1),
                              ("--repetition-penalty", repetition_penalty != 1.0)) if on]  # fmt: skip
    if unsent:  # the OpenAI API has no such parameters: refuse rather than silently drop them
        raise RecipeError(f"{', '.join(unsent)}: not part of the OpenAI API, so not available with --server")
    n = generate_file_via_server(
        server, model, input, output, api_key_env=api_key_env, max_new_tokens=max_new_tokens,
        temperature=temperature if sample else 0.0, top_p=top_p, stop=stop or None, seed=seed,
    )  # fmt: skip
    console.print(f"wrote {n} outputs to {output} (via {server})")


@app.command()
@friendly
def chat(
    model: str = typer.Argument(..., help="Catalog name, model folder, .gguf, Hub id or sft run folder."),
    system: str = typer.Option(None, "--system", help="System prompt (kept when old turns are dropped)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(0.7, "--temperature"),
    top_p: float = typer.Option(0.9, "--top-p"),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Run the model's own Python code (a run folder never turns this on).",
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="auto (bfloat16 where the CPU has native bf16 matmuls, else float32), float32 or bfloat16.",
    ),
):
    """Chat in the terminal (one line per turn; /reset clears the history, /exit quits)."""
    from .infer.chat import run_chat

    decoding = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sample else {}
    run_chat(model, system, max_new_tokens, trust_remote_code=trust_remote_code, dtype=dtype, **decoding)


# ---------------------------------------------------------------- serve
@app.command()
@friendly
def serve(
    models: list[str] = typer.Argument(
        ..., help="Catalog names, model folders, sft run folders; NAME=SPEC names one."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Any other address than loopback needs an API key."),
    port: int = typer.Option(8000, "--port"),
    api_key: str = typer.Option(
        None,
        "--api-key",
        help="Clients send 'Authorization: Bearer KEY'. Other local users can read a key "
        "given here in the process list: prefer $LMADAPT_API_KEY or --api-key-file.",
    ),  # fmt: skip
    api_key_file: Path = typer.Option(
        None, "--api-key-file", help="The key on line 1 (or $LMADAPT_API_KEY); keep the file chmod 600."
    ),
    cors_origin: list[str] = typer.Option(
        None, "--cors-origin", help="Allow this browser origin (repeatable; '*' only with a key)."
    ),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        help="Without a key, also answer this Host name (repeatable; e.g. a LAN alias).",
    ),
    runs_root: Path = typer.Option(None, "--runs-root", help="Show the run folders under it in the web UI."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="auto (bfloat16 where the CPU has native bf16 matmuls, else float32), float32 or bfloat16.",
    ),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="The most new tokens one request may ask for."),
    max_n: int = typer.Option(4, "--max-n", help="The most choices (n) per request."),
    max_rows: int = typer.Option(
        None, "--max-rows", help="The most sequences (prompts x n) per request (default: --max-batch)."
    ),
    max_prompt_chars: int = typer.Option(
        200_000, "--max-prompt-chars", help="Prompt characters per request, checked before tokenizing."
    ),
    max_concurrent: int = typer.Option(64, "--max-concurrent", help="Requests in flight; more get 429."),
    max_batch: int = typer.Option(
        16, "--max-batch", help="Sequences decoded together (continuous batching)."
    ),
    max_body: int = typer.Option(4 * 1024 * 1024, "--max-body", help="Request body cap in bytes (413)."),
    max_predict_rows: int = typer.Option(
        10_000, "--max-predict-rows", help="Records per /api/predict upload."
    ),
    request_timeout: float = typer.Option(
        600.0, "--request-timeout", help="Seconds one request may generate for (then 504 / a stream error)."
    ),
    write_timeout: float = typer.Option(
        30.0, "--write-timeout", help="Seconds a stream waits for a client that stopped reading, then cut."
    ),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Run the model's own Python code."
    ),
):
    """Serve models over an OpenAI-compatible API (/v1/chat/completions, /v1/completions) with a web UI at /."""
    from .serve import serve as run_server

    run_server(
        models, host=host, port=port, api_key=api_key, api_key_file=api_key_file, cors_origins=cors_origin,
        allowed_hosts=allowed_host, runs_root=runs_root, dtype=dtype, trust_remote_code=trust_remote_code,
        threads=threads, max_tokens=max_tokens, max_n=max_n, max_rows=max_rows, max_prompt_chars=max_prompt_chars,
        max_concurrent=max_concurrent, max_batch=max_batch, max_body=max_body, max_predict_rows=max_predict_rows,
        request_timeout=request_timeout, write_timeout=write_timeout,
    )  # fmt: skip


# ---------------------------------------------------------------- auto
@app.command()
@friendly
def auto(
    train: Path = typer.Argument(..., help="Training records (.jsonl .json .csv .tsv .parquet)."),
    budget: str = typer.Option(..., "--budget", help="Wall-clock budget for everything, e.g. 20m, 90s, 1h."),
    eval_file: Path = typer.Option(
        None, "--eval", help="Evaluation records (default: a stratified 20% of TRAIN, said so)."
    ),
    test_file: Path = typer.Option(None, "--test", help="Test records, scored once, for the winner only."),
    metric: str = typer.Option("f1_macro", "--metric", help="Eval metric the trials are ranked by."),
    output: Path = typer.Option(Path("runs/auto"), "--output", help="Study, trials, leaderboard, winner."),
    task: str = typer.Option(None, "--task", help="classify or pair (default: read from the data)."),
    text: list[str] = typer.Option(
        None, "--text", help="Text field (repeatable; default: read from the data)."
    ),
    label: str = typer.Option(None, "--label", help="Label field (default: read from the data)."),
    model: list[str] = typer.Option(
        None,
        "--model",
        help="Also try this model (catalog name or folder; repeatable). Pulled ones are tried.",
    ),
    trials: int = typer.Option(None, "--trials", min=1, help="Stop once the study holds this many trials."),
    heartbeat: int = typer.Option(
        10,
        "--heartbeat",
        min=1,
        help="Seconds between a worker's heartbeats; a trial silent 3x as long is failed.",
    ),
    seed: int = typer.Option(0, "--seed"),
    refit: bool = typer.Option(
        True,
        "--refit/--no-refit",
        help="Train the winner again on train + eval before test (when time allows).",
    ),
    storage: str = typer.Option(
        None,
        "--storage",
        help="Optuna database URL for workers on several machines (postgresql://..., mysql+pymysql://...; "
        "--output then one shared folder). Default: OUTPUT/study.db (SQLite).",
    ),
):
    """Adapt the best model to your file within a wall-clock budget; re-run to continue, run twice to share.

    Prints what it understood and planned, a row per trial, the leaderboard (md/csv/json/png) and the winner,
    an ordinary run folder (OUTPUT/winner) with its recipe (OUTPUT/winner.yaml).
    """
    from .auto import parse_budget, run_auto

    run_auto(
        train, parse_budget(budget), output, eval_file, test_file, metric, task, text or None, label,
        model or [], trials, heartbeat, seed, refit=refit, storage_url=storage, say=_say,
    )  # fmt: skip


def _say(message: str) -> None:
    """auto's log line, as written (no markup, no wrapping: its table rows are wide)."""
    console.print(message, highlight=False, markup=False, soft_wrap=True)


def _auto_recipe(recipe: Path, overrides: list[str] | None) -> None:
    """`lmadapt train` of a `stage: auto` recipe: the same search as `lmadapt auto` with the recipe's keys."""
    from .auto import run_auto
    from .config import load_config
    from .config.auto import AutoRecipe, parse_budget

    r = load_config(recipe, AutoRecipe, overrides)
    a = r.auto
    run_auto(
        r.data.train, parse_budget(a.budget), r.output, r.data.eval, r.data.test, a.metric, r.task.type,
        r.task.text, r.task.label, a.models, a.trials, a.heartbeat, a.seed, refit=a.refit,
        storage_url=a.storage, say=_say,
    )  # fmt: skip
