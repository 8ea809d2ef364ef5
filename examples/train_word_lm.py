"""Train the word-level LSTM LM shipped with compress on the gensim Wikipedia excerpt.

Deterministic: a fixed seed and a fixed number of epochs (never wall time), so the same
command on the same torch build gives the same checkpoint. The recipe is the classic
word LM one: SGD with a large learning rate, divided by 4 whenever validation loss stops
improving, gradient-norm clipping at 0.25, dropout, truncated BPTT of 35 with the state
carried across chunks; the best-validation weights are kept.

Shipped checkpoint (see compress/checkpoints/word_lm.md for the measured numbers)::

    python examples/train_word_lm.py --epochs 6 --emsize 200 --nhid 200 --dropout 0.3 --tied \\
        --max-vocab 8000 --min-count 3 --threads 1 \\
        --out compress/checkpoints/word_lm.pt --card-md compress/checkpoints/word_lm.md \\
        --card-json compress/checkpoints/word_lm.json

Tiny test fixture::

    python examples/train_word_lm.py --epochs 1 --emsize 32 --nhid 32 --nlayers 2 --dropout 0 --tied \\
        --max-vocab 2000 --min-count 3 --threads 1 --out tests/fixtures/word_lm_tiny.pt
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from compress.data.wiki_dump import load_gensim_wiki
from compress.data.wikitext import TextDataSource, batchify, bptt_batches
from compress.fileio import atomic_write_json, atomic_write_text
from compress.models.word_lm import WordLM, perplexity, save_checkpoint

TINY_COMMAND = (
    "python examples/train_word_lm.py --epochs 1 --emsize 32 --nhid 32 --nlayers 2 --dropout 0 --tied "
    "--max-vocab 2000 --min-count 3 --threads 1 --out tests/fixtures/word_lm_tiny.pt"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults = the shipped checkpoint's recipe)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (compress format)")
    p.add_argument("--card-md", type=Path, help="write a Markdown model card here")
    p.add_argument("--card-json", type=Path, help="write the recorded metrics as JSON here")
    p.add_argument("--max-vocab", type=int, default=8000)
    p.add_argument("--min-count", type=int, default=3)
    p.add_argument("--emsize", type=int, default=200)
    p.add_argument("--nhid", type=int, default=200)
    p.add_argument("--nlayers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--tied", action="store_true", help="tie decoder and embedding weights")
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (shared machines: 1)")
    return p.parse_args(argv)


def evaluate(model: WordLM, source: TextDataSource) -> float:
    """Perplexity over the evaluation batches (state carried, as the notebook)."""
    model.eval()
    total, count, state = 0.0, 0, None
    for batch in source.batches("evaluation"):
        groups, state = model.score_batch(batch, state)
        total += groups["all"][0]
        count += groups["all"][1]
    return perplexity(total, count)


def train_epoch(model: WordLM, data: torch.Tensor, args: argparse.Namespace, lr: float) -> tuple[float, int]:
    """One pass of truncated BPTT over ``data`` ([T, B]); returns (train ppl, steps)."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    state, total, count, steps = None, 0.0, 0, 0
    for x, y in bptt_batches(data, args.bptt):
        model.zero_grad(set_to_none=True)
        logits, state = model(x, state)
        # Detach so backprop stops at the chunk boundary (truncated BPTT).
        state = (state[0].detach(), state[1].detach())
        loss = criterion(logits.view(-1, model.ntoken), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
        total += loss.item() * y.numel()
        count += y.numel()
        steps += 1
    return math.exp(total / count), steps


def sources(args: argparse.Namespace) -> tuple[TextDataSource, TextDataSource]:
    """Validation and test DataSources (the registered ``gensim_wiki`` batching)."""
    lines = load_gensim_wiki()
    common = {"max_vocab": args.max_vocab, "min_count": args.min_count, "bptt": args.bptt}
    valid = TextDataSource("gensim_wiki", lines, evaluation_split="valid", **common)
    test = TextDataSource("gensim_wiki", lines, evaluation_split="test", vocab=valid.vocab, **common)
    return valid, test


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    valid, test = sources(args)
    train = batchify(valid.ids["train"], args.batch_size)
    model = WordLM(len(valid.vocab), args.emsize, args.nhid, args.nlayers, args.dropout, args.tied)
    untrained = {"valid": evaluate(model, valid), "test": evaluate(model, test)}
    n_train = valid.ids["train"].numel()
    print(f"vocab {len(valid.vocab)}, train tokens {n_train}, untrained valid ppl {untrained['valid']:.1f}")
    lr, best, best_state, history, total_steps = args.lr, math.inf, None, [], 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        train_ppl, steps = train_epoch(model, train, args, lr)
        total_steps += steps
        val_ppl = evaluate(model, valid)
        history.append({"epoch": epoch, "lr": lr, "train_ppl": train_ppl, "valid_ppl": val_ppl})
        seconds = time.perf_counter() - t0
        print(
            f"epoch {epoch}: lr {lr:g} train ppl {train_ppl:.1f} valid ppl {val_ppl:.2f} ({seconds:.0f} s)", flush=True
        )
        if val_ppl < best:
            best, best_state = val_ppl, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            lr /= 4.0  # anneal when validation stops improving (the classic recipe)
    model.load_state_dict(best_state)
    result = {"valid": evaluate(model, valid), "test": evaluate(model, test)}
    wall = time.perf_counter() - start
    card = make_card(args, valid, model, untrained, result, history, total_steps, wall)
    save_checkpoint(model, args.out, vocab=valid.vocab, vocab_sha256=valid.vocab_sha256, card=card)
    card["file_bytes"] = args.out.stat().st_size
    write_cards(args, card)
    print(json.dumps({k: card[k] for k in ("perplexity", "untrained_perplexity", "wall_seconds", "file_bytes")}))
    return card


def make_card(args, valid, model, untrained, result, history, steps, wall) -> dict:  # noqa: ANN001
    """The model card dict stored in the checkpoint and written as JSON/Markdown."""
    return {
        "model": {"name": "word_lm", "args": model.compress_spec["args"]},
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"dataset": "gensim_wiki", "args": {"max_vocab": args.max_vocab, "min_count": args.min_count}},
        "vocab_size": len(valid.vocab),
        "vocab_sha256": valid.vocab_sha256,
        "train_tokens": int(valid.ids["train"].numel()),
        "evaluation": "bptt 35, batch 10, state carried across chunks, ppl = exp(NLL sum / tokens)",
        "perplexity": result,
        "untrained_perplexity": untrained,
        "recipe": {k: getattr(args, k) for k in ("lr", "clip", "epochs", "batch_size", "bptt", "seed", "dropout")},
        "steps": steps,
        "history": history,
        "threads": args.threads,
        "wall_seconds": round(wall, 1),
        "torch": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "command": "python examples/train_word_lm.py " + shlex.join(sys.argv[1:]),
    }


def write_cards(args: argparse.Namespace, card: dict) -> None:
    """Write the JSON record and the Markdown card when asked."""
    if args.card_json:
        keys = ("perplexity", "untrained_perplexity", "data", "vocab_sha256", "evaluation", "file_bytes")
        atomic_write_json(args.card_json, {k: card[k] for k in keys} | {"tolerance_rel": 1e-3})
    if args.card_md:
        atomic_write_text(args.card_md, render_markdown(card))


def render_markdown(card: dict) -> str:
    """Markdown model card."""
    ppl, raw = card["perplexity"], card["untrained_perplexity"]
    rows = "\n".join(
        f"| {h['epoch']} | {h['lr']:g} | {h['train_ppl']:.1f} | {h['valid_ppl']:.2f} |" for h in card["history"]
    )
    a, r = card["model"]["args"], card["recipe"]
    tied = "tied" if a["tie_weights"] else "untied"
    return f"""# word_lm.pt: word-level LSTM language model

A {a["nlayers"]}-layer LSTM language model (embedding {a["ninp"]}, hidden {a["nhid"]}, {tied} weights,
dropout {a["dropout"]}), {card["parameters"]:,} parameters, trained on the English Wikipedia excerpt
that ships inside gensim (dataset `gensim_wiki`, WikiText-like cleaning, split by article).
It exists so that quantization studies have a real, offline word LM to work on.

| | |
|---|---|
| data | `gensim_wiki` with `{json.dumps(card["data"]["args"])}`, {card["train_tokens"]:,} train tokens |
| vocabulary | {card["vocab_size"]} tokens (`<unk>` first), sha256 `{card["vocab_sha256"]}` |
| file | {card["file_bytes"]:,} bytes (fp32) |
| steps | {card["steps"]} SGD steps ({r["epochs"]} epochs of batch {r["batch_size"]} x bptt {r["bptt"]}) |
| recipe | SGD lr {r["lr"]:g}, /4 when validation stalls, clip {r["clip"]}, dropout {r["dropout"]}, seed {r["seed"]} |
| wall time | {card["wall_seconds"]:.0f} s on {card["threads"]} thread(s), torch {card["torch"]} |

Wall time includes data preparation and the per-epoch validation passes; it was measured on a
shared machine, so it varies with the load (the steps and the weights do not).

## Perplexity (fp32)

Evaluation: {card["evaluation"]}.

| split | trained | untrained (same seed, before training) |
|---|---|---|
| valid | {ppl["valid"]:.2f} | {raw["valid"]:.1f} |
| test | {ppl["test"]:.2f} | {raw["test"]:.1f} |

`word_lm.json` records these numbers; `tests/models/test_word_lm.py` (slow) re-evaluates the
checkpoint and compares at a relative tolerance of 1e-3.

## Training history

| epoch | lr | train ppl | valid ppl |
|---|---|---|---|
{rows}

## Reproduce

```
{card["command"]}
```

The tiny test fixture `tests/fixtures/word_lm_tiny.pt` (vocabulary 2000, 32/32 x 2, one epoch;
its card is stored inside the file) comes from the same script:

```
{TINY_COMMAND}
```
"""


if __name__ == "__main__":
    main()
