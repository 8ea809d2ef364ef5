"""Generation from a deployable artifact: ``python -m compress generate ARTIFACT.qpt --steps N --seed S --out F``.

The artifact (``export: true`` in a schedule) is loaded with its integer kernels, so a batch-1 step runs the
fused integer loops (compress/quant/fused) where the plan allows. Sampling draws its random numbers from
the seed (compress/models/autoregressive.py), so a seed gives the same file, byte for byte. A Performance
RNN writes MIDI (``.mid``); a word LM writes text (``.txt``) using the vocabulary of ``--vocab`` (a word LM
checkpoint; default: the shipped ``word_lm.pt`` when its vocabulary is the artifact's).

Example:
    >>> # generate("runs/perf_rnn/int8_full.qpt", steps=1000, seed=0, out="int8.mid")
    >>> # {'path': 'int8.mid', 'steps': 1000, 'items': 291, 'seconds': 2.9, 'ms_per_step': 2.9}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from compress.errors import CompressError

__all__ = ["generate", "main"]

EXIT_USER_ERROR = 2
SUFFIXES = {"performance_events": ".mid", "words": ".txt"}
KIND_WORDS = {"performance_events": "music (MIDI)", "words": "text"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compress generate",
        description="Generate one sequence from a quantized artifact (.qpt) and write it as MIDI or text.",
    )
    p.add_argument("artifact", help="the .qpt file written by an experiment with 'export: true'")
    p.add_argument("--steps", type=int, required=True, help="events (Performance RNN) or words (word LM)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial draw and the sampling (default 0)")
    p.add_argument("--out", type=Path, required=True, help="the file to write: .mid for music, .txt for words")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    p.add_argument("--vocab", type=Path, help="word LM checkpoint whose vocabulary turns ids into words")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _check_args(steps: int, seed: int, temperature: float, out: Path, artifact: Path) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CompressError(f"--steps must be a whole number of at least 1, got {steps!r}.")
    if not 0 <= seed < 2**63:
        raise CompressError(f"--seed must be between 0 and 2**63 - 1, got {seed}.")
    if not 0 < temperature < float("inf"):
        raise CompressError(f"--temperature must be a positive number, got {temperature}.")
    if not out.parent.is_dir():
        raise CompressError(f"--out {out}: the folder {out.parent} does not exist; create it or pick another path.")
    if out.exists() and (not out.is_file() or out.resolve() == artifact.resolve()):
        raise CompressError(f"--out {out} is not a file that can be replaced (a folder, or the artifact itself).")


def _attach_vocab(model: Any, vocab: Path | None) -> None:
    """Give a word LM its vocabulary (checked against the artifact's fingerprint when it records one)."""
    from compress.api import checkpoint_path
    from compress.data.wikitext import load_checkpoint_vocab, vocab_sha256

    want = getattr(model, "vocab_sha256", None) or (model.compress_spec["args"].get("vocab_sha256"))
    source = vocab or checkpoint_path("word_lm.pt")
    words = load_checkpoint_vocab(source)
    if len(words) != model.ntoken or (want and vocab_sha256(words) != want):
        hint = "" if vocab else " Give the checkpoint the model was trained with as --vocab."
        raise CompressError(f"the vocabulary of {source} ({len(words)} words) is not this artifact's.{hint}")
    model.vocab = words


def generate(
    artifact: str | os.PathLike[str],
    *,
    steps: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    temperature: float = 1.0,
    vocab: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Load ``artifact``, sample one sequence of ``steps`` and write it to ``out`` (.mid or .txt).

    Returns ``{"path", "steps", "items" (notes or words written), "seconds", "ms_per_step"}``; the time
    is the sampling loop's alone (batch 1).

    Example:
        >>> # generate("int8_full.qpt", steps=500, seed=1, out="x.mid")["ms_per_step"]
    """
    from compress.models.autoregressive import require_autoregressive, sample
    from compress.quant import load_quantized
    from compress.render import write_sequence

    artifact, out = Path(artifact), Path(out)
    _check_args(steps, seed, temperature, out, artifact)
    model = load_quantized(artifact)
    require_autoregressive(model, "generate")
    want = SUFFIXES[model.generates]
    if out.suffix.lower() != want:
        raise CompressError(f"--out {out}: this artifact generates {KIND_WORDS[model.generates]}; write a {want} file.")
    if model.generates == "words":
        _attach_vocab(model, Path(vocab) if vocab is not None else None)
    start = time.perf_counter()
    events = sample(model, 1, steps, seed=seed, temperature=temperature, progress=progress)
    seconds = time.perf_counter() - start
    items = write_sequence(model, events[:, 0], out)
    return {"path": str(out), "steps": steps, "items": items, "seconds": seconds, "ms_per_step": 1e3 * seconds / steps}


def main(argv: list[str] | None = None) -> int:
    """``python -m compress generate ...``; returns the exit code (2 for a user error)."""
    args = _parser().parse_args(argv)
    try:
        from compress.cli import set_threads

        set_threads(args.threads)
        import compress.components  # noqa: F401  (the artifact's model is rebuilt from the registry)

        done = generate(args.artifact, steps=args.steps, out=args.out, seed=args.seed,
                        temperature=args.temperature, vocab=args.vocab, progress=not args.quiet)  # fmt: skip
    except CompressError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was written (the output is written atomically at the end).", file=sys.stderr)
        return 130
    if not args.quiet:
        what = "notes" if args.out.suffix.lower() == ".mid" else "words"
        print(f"wrote {done['path']}: {done['items']} {what} from {done['steps']} steps, "
              f"{done['ms_per_step']:.2f} ms/step (batch 1)")  # fmt: skip
    return 0
