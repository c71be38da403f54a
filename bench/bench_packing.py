"""SFT throughput: packed rows vs padded batches (rlsys.data), and TRL's SFTTrainer, one run.

Same random Llama (4 layers, hidden 256, SmolLM2 tokenizer), same synthetic chat data whose
lengths vary more than 10x, same optimizer (AdamW, lr 1e-4), one epoch each, one CPU thread.
Reported per setup: real (non-padding) tokens per second of wall time and per second of
process CPU time (steadier on a shared machine) for forward + backward + AdamW step, padding
fraction, the initial loss per target token over the whole data set (packed and padded must
agree to float32 noise: the block-causal mask makes them the same computation), and the mean
train loss per target token.

TRL runs in its own venv (``bench/.venv-trl``, created on first use) as a subprocess of this
same file (``--trl-worker``), so TRL's pins never touch the project venv.

    .venv/bin/python bench/bench_packing.py [--examples 96] [--skip-trl]

Writes ``bench/packing_results.md``. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRL_VENV = os.path.join(HERE, ".venv-trl")
TRL_PIP = ["torch==2.13.0", "transformers<5.20", "trl", "datasets", "accelerate"]
MODEL_SHAPE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 512}
LR = 1e-4
WORDS = ("the market rate bond yield price risk asset fund equity credit loan bank cash flow "
         "growth value trade index share debt income cost margin tax policy capital return").split()


def make_records(n: int, seed: int) -> list[list[dict]]:
    """Synthetic chats (short system prompt, question, answer); answer word counts are
    log-uniform in [1, 240], so documents span ~20 to 256 (truncated) tokens."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        prompt_words = rng.randint(1, 6)
        response_words = int(math.exp(rng.uniform(0.0, math.log(240))))
        records.append([
            {"role": "system", "content": "Answer."},
            {"role": "user", "content": " ".join(rng.choices(WORDS, k=prompt_words)) + "?"},
            {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=response_words))},
        ])
    return records


def build_model_dir(cache: str) -> str:
    """The benchmark model: a seeded random Llama of MODEL_SHAPE in the rlsys model cache."""
    from rlsys.modeling import random_llama_dir

    return random_llama_dir("bench-llama-256x4", seed=0, cache_dir=cache, **MODEL_SHAPE)


def _loss_sum(model, batch):
    """Summed next-token NLL over counted tokens (fp32) and their count."""
    import torch.nn.functional as F

    from rlsys.data.attention import packed_forward

    logits = packed_forward(model, batch)  # (B, T, V)
    target = batch.mask[:, 1:]  # (B, T-1): token t+1 is predicted by logits[:, t]
    picked = logits[:, :-1][target].float()  # (N, V) only the counted predictions
    nll = F.cross_entropy(picked, batch.input_ids[:, 1:][target], reduction="sum")
    return nll, int(target.sum())


def make_steps(encoded, mode: str, max_tokens: int, batch_size: int, pad_id: int):
    """Per-step TokenBatches over one epoch: ``batch_size`` packed rows, or ``batch_size``
    padded examples (in data order)."""
    from rlsys.data.packing import collate_packed, collate_padded, pack

    if mode == "padded":
        return [collate_padded(encoded[i:i + batch_size], pad_id)
                for i in range(0, len(encoded), batch_size)]
    bins = pack(encoded, max_tokens)
    return [collate_packed(encoded, bins[i:i + batch_size], max_tokens, pad_id)
            for i in range(0, len(bins), batch_size)]


def run_rlsys(model_dir: str, encoded, mode: str, max_tokens: int, batch_size: int) -> dict:
    """Initial full-data loss, then one epoch of forward+backward+AdamW; returns the numbers."""
    import torch

    from rlsys.modeling import load_causal_lm, load_tokenizer

    pad_id = load_tokenizer(model_dir).pad_token_id
    model = load_causal_lm(model_dir)
    steps = make_steps(encoded, mode, max_tokens, batch_size, pad_id)
    with torch.no_grad():
        sums = [_loss_sum(model, b) for b in steps]
    initial = float(sum(s for s, _ in sums)) / sum(n for _, n in sums)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    losses, targets = 0.0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in steps:
        loss_sum, count = _loss_sum(model, batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses, targets = losses + float(loss_sum.detach()), targets + count
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    real = sum(b.num_tokens() for b in steps)
    slots = sum(b.input_ids.numel() for b in steps)
    return {"setup": f"rlsys {mode}", "steps": len(steps), "real_tokens": real,
            "padding": 1 - real / slots, "seconds": seconds, "tokens_per_s": real / seconds,
            "cpu_seconds": cpu_seconds, "tokens_per_cpu_s": real / cpu_seconds,
            "initial_loss": initial, "train_loss": losses / targets}


def trl_worker(spec_path: str) -> None:
    """Runs inside bench/.venv-trl: SFTTrainer on the same model dir and records."""
    import shutil

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    with open(spec_path) as handle:
        spec = json.load(handle)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    rows = [{"prompt": chat[:-1], "completion": chat[-1:]} for chat in spec["records"]]
    results = []
    for packing in (True, False):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32,
                                                     attn_implementation="sdpa")
        output_dir = tempfile.mkdtemp(prefix="rlsys-bench-trl-")
        config = SFTConfig(
            output_dir=output_dir, packing=packing,
            max_length=spec["max_tokens"] if packing else spec["max_len"],
            per_device_train_batch_size=spec["trl_rows"] if packing else spec["batch_size"],
            num_train_epochs=1, learning_rate=LR, lr_scheduler_type="constant",
            weight_decay=0.01, logging_steps=1, save_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, seed=0, completion_only_loss=True,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
        real = sum(len(x) for x in trainer.train_dataset["input_ids"])
        cpu_start = time.process_time()
        metrics = trainer.train().metrics
        cpu_seconds = time.process_time() - cpu_start
        shutil.rmtree(output_dir, ignore_errors=True)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        results.append({
            "setup": f"TRL SFTTrainer {'packed' if packing else 'padded'}",
            "steps": trainer.state.global_step, "real_tokens": real, "padding": float("nan"),
            "seconds": metrics["train_runtime"], "tokens_per_s": real / metrics["train_runtime"],
            "cpu_seconds": cpu_seconds, "tokens_per_cpu_s": real / cpu_seconds,
            "initial_loss": losses[0] if losses else float("nan"),
            "train_loss": metrics.get("train_loss", float("nan")),
        })
    print("RESULTS " + json.dumps(results))


def ensure_trl_venv() -> str:
    """Create bench/.venv-trl with TRL (and the CPU torch wheel) once; returns its python."""
    python = os.path.join(TRL_VENV, "bin", "python")
    probe = [python, "-c", "import trl, datasets, accelerate"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", TRL_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *TRL_PIP], check=True)
    return python


def run_trl(model_dir: str, records: list[list[dict]], max_len: int, max_tokens: int,
            batch_size: int, trl_rows: int, workdir: str) -> list[dict]:
    """Run ``trl_worker`` in the TRL venv (cwd ``workdir``); returns its result rows."""
    python = ensure_trl_venv()
    spec_path = os.path.join(workdir, "trl_spec.json")
    with open(spec_path, "w") as handle:
        json.dump({"model_dir": model_dir, "records": records, "max_len": max_len,
                   "max_tokens": max_tokens,
                   "batch_size": batch_size, "trl_rows": trl_rows}, handle)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([python, os.path.abspath(__file__), "--trl-worker", spec_path],
                          capture_output=True, text=True, env=env, cwd=workdir)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"TRL worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULTS "):])


def format_table(rows: list[dict]) -> str:
    """Markdown table of the result rows."""
    head = ("| setup | steps | real tokens | padding | wall s | real tokens/s (wall) "
            "| CPU s | real tokens/CPU s | initial loss/token (*) | mean train loss/token |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['setup']} | {r['steps']} | {r['real_tokens']} | "
        f"{'n/a' if math.isnan(r['padding']) else format(r['padding'], '.1%')} | "
        f"{r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['cpu_seconds']:.1f} | "
        f"{r['tokens_per_cpu_s']:.0f} | {r['initial_loss']:.6f} | {r['train_loss']:.4f} |\n"
        for r in rows)
    return head + body


def main() -> None:
    """Parse arguments, run every setup, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=512, help="packed row length")
    parser.add_argument("--batch-size", type=int, default=8, help="padded examples per step")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--trl-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    sys.path.insert(0, ROOT)
    from rlsys.data.encode import encode_sft
    from rlsys.modeling import default_cache_dir, load_tokenizer

    torch.set_num_threads(1)
    model_dir = build_model_dir(default_cache_dir())
    tokenizer = load_tokenizer(model_dir)
    records = make_records(args.examples, seed=0)
    encoded = [encode_sft(tokenizer, {"messages": chat}, mask_mode="prompt", max_len=args.max_len)
               for chat in records]
    lengths = sorted(len(e) for e in encoded)
    steps = -(-len(encoded) // args.batch_size)
    rows_per_step = max(1, round(sum(lengths) / steps / args.max_tokens))
    rows = [run_rlsys(model_dir, encoded, "packed", args.max_tokens, rows_per_step),
            run_rlsys(model_dir, encoded, "padded", args.max_tokens, args.batch_size)]
    if not args.skip_trl:
        with tempfile.TemporaryDirectory(prefix="rlsys-bench-") as workdir:
            rows += run_trl(model_dir, records, args.max_len, args.max_tokens, args.batch_size,
                            rows_per_step, workdir=workdir)
    write_report(rows, args, lengths, rows_per_step)


def _ratios(a: dict, b: dict) -> str:
    return (f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s (wall), "
            f"{a['tokens_per_cpu_s'] / b['tokens_per_cpu_s']:.2f}x tokens/CPU-s")


def write_report(rows: list[dict], args, lengths: list[int], rows_per_step: int) -> None:
    """Print the table and write bench/packing_results.md."""
    by = {r["setup"]: r for r in rows}
    packed, padded = by["rlsys packed"], by["rlsys padded"]
    notes = [
        f"Data: {len(lengths)} synthetic chats, {lengths[0]}-{lengths[-1]} tokens "
        f"({lengths[-1] / lengths[0]:.0f}x apart), mask_mode=prompt, max_len {args.max_len}.",
        f"Model: random Llama {MODEL_SHAPE} + SmolLM2 tokenizer (49,152 vocab), fp32, sdpa, "
        f"AdamW lr {LR}, 1 CPU thread, one epoch per setup.",
        f"Packed: rows of {args.max_tokens} tokens, {rows_per_step} rows/step; padded: "
        f"{args.batch_size} examples/step.",
        "(*) rlsys: loss over the whole data set before training (packed and padded must agree); "
        "TRL: its first logged step (one batch, so only roughly comparable).",
        "CPU seconds (process time, all threads) are the steadier measure on a shared machine; "
        "wall time includes waiting for the cores.",
        f"rlsys packed / padded: {_ratios(packed, padded)}; "
        f"initial loss difference {abs(packed['initial_loss'] - padded['initial_loss']):.2e}.",
    ]
    for name in ("TRL SFTTrainer packed", "TRL SFTTrainer padded"):
        if name in by:
            notes.append(f"rlsys packed / {name}: {_ratios(packed, by[name])}.")
    table = format_table(rows)
    print(table + "\n" + "\n".join(notes))
    with open(os.path.join(HERE, "packing_results.md"), "w") as handle:
        handle.write("# SFT packing benchmark (bench/bench_packing.py)\n\n" + table + "\n"
                     + "".join(f"* {n}\n" for n in notes))


if __name__ == "__main__":
    main()
