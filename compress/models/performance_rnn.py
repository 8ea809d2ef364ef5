"""Performance RNN: a recurrent model of 240 performance events conditioned on 24 controls.

The module tree and names follow the seed notebook (and the public PyTorch port), so the
public ``.sess`` checkpoints load and quantization overrides can address every layer:
``inithid_fc`` (+ ``inithid_fc_activation`` Tanh) maps a noise vector z to the initial
state; ``event_embedding`` (240 x 240); ``concat_input_fc`` (+ LeakyReLU 0.1) mixes
[embedding, no-control flag, controls]; ``gru`` is the multi-layer recurrent core
(``nn.LSTM`` or ``nn.GRU``; a ModularLSTM/ModularGRU after conversion) and
``output_fc`` reads the concatenated hidden states of **all** layers (layer 0 first) at
every step; ``output_fc_activation`` (Softmax) is used for sampling only.

Quirks reproduced on purpose: the initial state is the ``inithid_fc`` output *viewed*
(not transposed) from ``[B, L*H]`` to ``[L, B, H]``, which mixes rows of z across a batch
when B > 1; an LSTM gets h0 = c0 = that tensor. The LeakyReLU is not in place (the
original's in-place op would hide its input from observation hooks).

Teacher-forced passes over an exact ``nn.LSTM``/``nn.GRU`` without hooks run layer by
layer with the core's own weights (vectorized over time); any other core (converted,
wrapped or observed) is called one time step at a time, which is the reference semantics.

Example:
    >>> model = PerformanceRNN(hidden_dim=16, num_layers=2).eval()
    >>> events = torch.randint(240, (10, 3))
    >>> groups, _ = model.score_batch((events, None, torch.zeros(3, 32)))
    >>> groups["all"][1], sorted(groups)
    (30, ['all', 'no_velocity'])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import ModelError
from compress.models.checks import check_and_build, check_args
from compress.models.perf_rnn_checkpoint import CHECKPOINT_FORMAT, read_checkpoint, save_checkpoint
from compress.registry import MODELS
from compress.utils import model_device, model_dtype

__all__ = [
    "PerformanceRNN",
    "performance_rnn",
    "read_checkpoint",
    "save_checkpoint",
    "SHIPPED_CHECKPOINT",
    "CHECKPOINT_FORMAT",
]

SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "perf_rnn_lstm.pt"
DEFAULTS: dict[str, Any] = {
    "event_dim": 240,
    "control_dim": 24,
    "init_dim": 32,
    "hidden_dim": 512,
    "num_layers": 3,
    "dropout": 0.3,
    "cell": "lstm",
}
# The 240-event layout (compress.data.events) puts velocity events at 176..207; models do
# not import the data stage, so the range is restated here (a test checks they agree).
STANDARD_EVENT_DIM = 240
VELOCITY_EVENTS = (176, 208)

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class PerformanceRNN(nn.Module):
    """The Performance RNN (see the module docstring for layout and quirks).

    Args:
        event_dim: event vocabulary size (240); the last event is the start token.
        control_dim: control features per step (24).
        init_dim: width of the noise vector z (32).
        hidden_dim: recurrent width.
        num_layers: recurrent layers.
        dropout: dropout between recurrent layers (training only).
        cell: ``"lstm"`` or ``"gru"``.

    Example:
        >>> PerformanceRNN(hidden_dim=8, num_layers=2, cell="gru").output_fc.in_features
        16
    """

    def __init__(
        self,
        event_dim: int = 240,
        control_dim: int = 24,
        init_dim: int = 32,
        hidden_dim: int = 512,
        num_layers: int = 3,
        dropout: float = 0.3,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ModelError(f"Unknown Performance RNN cell '{cell}'; use 'lstm' or 'gru'.")
        self.event_dim, self.control_dim, self.init_dim = event_dim, control_dim, init_dim
        self.hidden_dim, self.num_layers, self.dropout, self.cell = hidden_dim, num_layers, float(dropout), cell
        self.inithid_fc = nn.Linear(init_dim, num_layers * hidden_dim)
        self.inithid_fc_activation = nn.Tanh()
        self.event_embedding = nn.Embedding(event_dim, event_dim)
        self.concat_input_fc = nn.Linear(event_dim + 1 + control_dim, hidden_dim)
        self.concat_input_fc_activation = nn.LeakyReLU(0.1)  # not in place: observation hooks need its input
        core = nn.LSTM if cell == "lstm" else nn.GRU
        self.gru = core(hidden_dim, hidden_dim, num_layers, dropout=self.dropout if num_layers > 1 else 0.0)
        self.output_fc = nn.Linear(num_layers * hidden_dim, event_dim)
        self.output_fc_activation = nn.Softmax(dim=-1)
        self.compress_spec = {"model": "performance_rnn", "args": self.arch_args()}
        self._reset_parameters()

    def arch_args(self) -> dict[str, Any]:
        """The constructor arguments, as stored in checkpoints and ``compress_spec``."""
        names = ("event_dim", "control_dim", "init_dim", "hidden_dim", "num_layers", "dropout", "cell")
        return {name: getattr(self, name) for name in names}

    def _reset_parameters(self) -> None:
        for layer in (self.event_embedding, self.inithid_fc, self.concat_input_fc, self.output_fc):
            nn.init.xavier_normal_(layer.weight)
        nn.init.zeros_(self.inithid_fc.bias)
        nn.init.zeros_(self.output_fc.bias)

    @property
    def start_event(self) -> int:
        """The first input of every sequence: the last event index (the longest time shift)."""
        return self.event_dim - 1

    # ----------------------------------------------------------------- building blocks
    def init_state(self, z: torch.Tensor) -> State:
        """Initial recurrent state from z ``[B, init_dim]``, with the original's ``view`` quirk."""
        hidden = self.inithid_fc_activation(self.inithid_fc(z))
        hidden = hidden.view(self.num_layers, z.shape[0], self.hidden_dim)  # a view, not a transpose: as trained
        return (hidden, hidden) if self.cell == "lstm" else hidden

    def embed_inputs(self, events: torch.Tensor, controls: torch.Tensor | None) -> torch.Tensor:
        """Recurrent-core inputs ``[T, B, hidden]`` from input events ``[T, B]`` and controls."""
        embedded = self.event_embedding(events)
        if controls is None:
            flag = embedded.new_ones(*events.shape, 1)
            controls = embedded.new_zeros(*events.shape, self.control_dim)
        else:
            flag = embedded.new_zeros(*events.shape, 1)
        mixed = self.concat_input_fc(torch.cat([embedded, flag, controls.to(embedded.dtype)], dim=-1))
        return self.concat_input_fc_activation(mixed)

    def _hidden_of(self, state: State) -> torch.Tensor:
        return state[0] if isinstance(state, tuple) else state

    def step(self, event: torch.Tensor, control: torch.Tensor | None, state: State) -> tuple[torch.Tensor, State]:
        """One step: logits ``[1, B, event_dim]`` for input events ``[1, B]``, and the new state."""
        _, state = self.gru(self.embed_inputs(event, control), state)
        hidden = self._hidden_of(state)  # [L, B, H] -> [B, L*H], layer-major
        features = hidden.transpose(0, 1).reshape(1, hidden.shape[1], -1)
        return self.output_fc(features), state

    def _vectorizable(self) -> bool:
        core = self.gru
        return type(core) in (nn.LSTM, nn.GRU) and core.bias and not (core._forward_hooks or core._forward_pre_hooks)

    def _run_layers(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """All layers' hidden sequences via one call per layer on the core's own weights."""
        lstm = isinstance(state, tuple)
        outputs, finals = [], []
        for k in range(self.num_layers):
            if k > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            params = [getattr(self.gru, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if lstm:
                hx = [state[0][k : k + 1], state[1][k : k + 1]]
                x, h, c = torch.lstm(x, hx, params, True, 1, 0.0, self.training, False, False)
                finals.append((h, c))
            else:
                x, h = torch.gru(
                    x, self._hidden_of(state)[k : k + 1], params, True, 1, 0.0, self.training, False, False
                )
                finals.append(h)
            outputs.append(x)
        if lstm:
            final: State = (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        else:
            final = torch.cat(finals)
        return torch.cat(outputs, dim=-1), final

    def _run_core(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self._vectorizable():
            return self._run_layers(x, state)
        core = self.gru
        if hasattr(core, "forward_all_layers") and not (core._forward_hooks or core._forward_pre_hooks):
            return self._run_all_layers(x, state)
        return self._run_steps(x, state)

    def _run_all_layers(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """A modular core gives every layer's sequence in one call (each input projection on all steps)."""
        outputs, finals = self.gru.forward_all_layers(x, state)
        return torch.cat(outputs, dim=-1), (finals if isinstance(state, tuple) else finals[0])

    def _run_steps(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """All layers' hidden states, one core call per time step (works for any core)."""
        features = []
        for t in range(x.shape[0]):
            _, state = self.gru(x[t : t + 1], state)
            hidden = self._hidden_of(state)
            features.append(hidden.transpose(0, 1).reshape(hidden.shape[1], -1))
        return torch.stack(features), state

    # ----------------------------------------------------------------- sequence model protocol
    def _prepare(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        events, controls, z = (tuple(batch) + (None,))[:3]
        device, dtype = model_device(self), model_dtype(self)
        controls = None if controls is None else controls.to(device=device, dtype=dtype)
        z = None if z is None else z.to(device=device, dtype=dtype)
        return events.to(device=device, dtype=torch.long), controls, z

    def forward_batch(self, batch: Any, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        """Teacher-forced logits ``[T, B, event_dim]`` of a dataset batch ``(events, controls, z)``.

        The input is the start event followed by ``events[:-1]``; the targets are ``events``.
        Without ``state`` the state starts from z (zeros when the batch has no z). Dataset
        windows are independent, so a batch that carries z returns ``None`` as its state
        (nothing to carry); otherwise the detached final state is returned.

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
            >>> tuple(m.forward_batch((torch.zeros(4, 2, dtype=torch.long), None, torch.zeros(2, 32)))[0].shape)
            (4, 2, 240)
        """
        events, controls, z = self._prepare(batch)
        steps, size = events.shape
        start = events.new_full((1, size), self.start_event)
        inputs = torch.cat([start, events[:-1]])
        fresh = state is None
        if state is None:
            state = self.init_state(z if z is not None else self.inithid_fc.weight.new_zeros(size, self.init_dim))
        x = self.embed_inputs(inputs, controls)
        features, final = self._run_core(x, state)
        carried = None if fresh and z is not None else _detach(final)
        return self.output_fc(features), carried

    def forward(self, batch: Any, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        """Same as :meth:`forward_batch` (so hooks on the whole model see a call)."""
        return self.forward_batch(batch, state)

    @torch.no_grad()
    def score_batch(self, batch: Any, state: State | None = None) -> tuple[dict[str, tuple[float, int]], Any]:
        """NLL sums (float64, nats) and counts: ``all`` and ``no_velocity`` (targets not velocity events).

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
            >>> nll = m.score_batch((torch.zeros(5, 1, dtype=torch.long), None))[0]["all"][0] / 5
            >>> import math
            >>> abs(nll - math.log(240)) < 0.3  # an untrained model is close to uniform over 240 events
            True
        """
        logits, state = self(batch, state)
        targets = self._prepare(batch)[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        groups = {"all": (float(nll.sum()), int(nll.numel()))}
        if self.event_dim == STANDARD_EVENT_DIM:
            keep = (targets < VELOCITY_EVENTS[0]) | (targets >= VELOCITY_EVENTS[1])
            groups["no_velocity"] = (float(nll[keep].sum()), int(keep.sum()))
        return groups, state

    def training_loss(self, batch: Any, state: State | None = None) -> tuple[torch.Tensor, State | None]:
        """Mean NLL per event of a batch (differentiable; what :meth:`score_batch` sums) and the state to carry.

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
            >>> loss, _ = m.training_loss((torch.zeros(5, 2, dtype=torch.long), None, torch.zeros(2, 32)))
            >>> loss.requires_grad
            True
        """
        logits, state = self(batch, state)
        targets = self._prepare(batch)[0]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1)), state

    @torch.no_grad()
    def generate(
        self,
        init: torch.Tensor,
        steps: int,
        greedy: float = 1.0,
        temperature: float = 1.0,
        controls: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate events autoregressively from z ``init [B, init_dim]``.

        Each step takes the argmax with probability ``greedy`` (one draw per step for the
        whole batch, as the original; the default 1.0 is pure argmax) and otherwise samples
        from ``softmax(logits / temperature)``. Draws use ``generator`` (a CPU generator;
        seed 0 when omitted).

        Args:
            init: z, ``[B, init_dim]``.
            steps: events to generate.
            greedy: probability of an argmax step.
            temperature: softmax temperature of sampled steps.
            controls: ``[1 or >= steps, B, control_dim]`` (one row repeats), or None.
            generator: random source for sampling.

        Returns:
            CPU LongTensor ``[steps, B]``.

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=2).eval()
            >>> tuple(m.generate(torch.zeros(3, 32), 5, greedy=0.5).shape)
            (5, 3)
        """
        device, dtype = model_device(self), model_dtype(self)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        state = self.init_state(init.to(device=device, dtype=dtype))
        event = torch.full((1, init.shape[0]), self.start_event, dtype=torch.long, device=device)
        controls = _expand_controls(controls, steps, device, dtype)
        out = []
        for t in range(steps):
            control = None if controls is None else controls[min(t, controls.shape[0] - 1)].unsqueeze(0)
            logits, state = self.step(event, control, state)
            if greedy >= 1.0 or (greedy > 0 and float(torch.rand(1, generator=generator)) < greedy):
                event = logits.argmax(-1)
            else:
                probs = self.output_fc_activation(logits[0] / temperature).float().cpu()
                event = torch.multinomial(probs, 1, generator=generator).T.to(device)
            out.append(event[0].cpu())
        return torch.stack(out)

    # ----------------------------------------------------------------- autoregressive protocol
    generates = "performance_events"  # compress/models/autoregressive.py: sequences are written as MIDI

    def rollout_init(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, State]:
        """Start events ``[1, B]`` and the state from z ~ N(0, I) drawn with ``generator`` (no controls).

        Example:
            >>> x, (h, c) = PerformanceRNN(hidden_dim=8, num_layers=2).rollout_init(3, torch.Generator())
            >>> x.tolist(), tuple(h.shape)
            ([[239, 239, 239]], (2, 3, 8))
        """
        z = torch.randn(batch_size, self.init_dim, generator=generator)
        device, dtype = model_device(self), model_dtype(self)
        start = torch.full((1, batch_size), self.start_event, dtype=torch.long, device=device)
        return start, self.init_state(z.to(device=device, dtype=dtype))

    def rollout_step(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits ``[B, event_dim]`` of the next event after ``inputs [1, B]``, and the new state.

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
            >>> x, s = m.rollout_init(2, torch.Generator())
            >>> tuple(m.rollout_step(x, s)[0].shape)
            (2, 240)
        """
        logits, state = self.step(inputs.to(model_device(self)), None, state)
        return logits[0], state

    def rollout_hidden(self, state: State) -> torch.Tensor:
        """Every layer's hidden state per sequence, ``[B, num_layers * hidden_dim]`` (the decoder's input).

        Example:
            >>> m = PerformanceRNN(hidden_dim=8, num_layers=2)
            >>> tuple(m.rollout_hidden(m.rollout_init(3, torch.Generator())[1]).shape)
            (3, 16)
        """
        hidden = self._hidden_of(state)
        return hidden.transpose(0, 1).reshape(hidden.shape[1], -1)

    def check_data(self, data: Any) -> None:
        """Raise :class:`ModelError` when the data's first evaluation batch does not fit this model.

        Checks event indices < ``event_dim``, z width == ``init_dim`` and control width ==
        ``control_dim``.

        Example:
            >>> class Data:
            ...     def batches(self, split):
            ...         yield torch.zeros(3, 2, dtype=torch.long), None, torch.zeros(2, 16)
            >>> PerformanceRNN(hidden_dim=8, num_layers=1).check_data(Data())  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            compress.errors.ModelError: ...
        """
        events, controls, z = (tuple(next(iter(data.batches("evaluation")))) + (None,))[:3]
        problems = []
        if int(events.max()) >= self.event_dim or int(events.min()) < 0:
            problems.append(f"event indices reach {int(events.max())} but the model has {self.event_dim} events")
        if z is not None and z.shape[-1] != self.init_dim:
            problems.append(f"z has width {z.shape[-1]} but init_dim is {self.init_dim} (set the dataset's init_dim)")
        if controls is not None and controls.shape[-1] != self.control_dim:
            problems.append(f"controls have width {controls.shape[-1]} but control_dim is {self.control_dim}")
        if problems:
            raise ModelError("The data does not fit this Performance RNN: " + "; ".join(problems) + ".")

    def sample_for_calibration(self, batch_size: int, steps: int, generator: torch.Generator) -> None:
        """Run :meth:`generate` from seeded random z (argmax decoding), for the ``generate`` stats source.

        Example:
            >>> PerformanceRNN(hidden_dim=8, num_layers=1).sample_for_calibration(2, 3, torch.Generator())
        """
        z = torch.randn(batch_size, self.init_dim, generator=generator)
        self.generate(z, steps, greedy=1.0, generator=generator)


def _detach(state: State) -> State:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()  # type: ignore[return-value]


def _expand_controls(controls: torch.Tensor | None, steps: int, device: Any, dtype: torch.dtype) -> Any:
    if controls is None:
        return None
    if controls.dim() != 3 or (controls.shape[0] not in (1,) and controls.shape[0] < steps):
        raise ModelError(f"controls must be [1 or >= {steps}, B, control_dim]; got {tuple(controls.shape)}.")
    return controls.to(device=device, dtype=dtype)


# --------------------------------------------------------------------- factory
def _resolve_args(explicit: dict[str, Any], config: dict[str, Any] | None, path: Path | None) -> dict[str, Any]:
    if config is None:
        return {**DEFAULTS, **explicit}
    clashes = [
        f"{k}={explicit[k]!r} (checkpoint: {config[k]!r})"
        for k in explicit
        if config.get(k, explicit[k]) != explicit[k]
    ]
    if clashes:
        raise ModelError(
            f"Checkpoint '{path}' fixes the architecture, and the schedule's model args disagree: "
            f"{', '.join(clashes)}. Remove these args or use a matching checkpoint."
        )
    return {**DEFAULTS, **explicit, **config}


@MODELS.register(
    "performance_rnn",
    schema={
        "type": "object",
        "properties": {
            "event_dim": {"type": "integer", "minimum": 2, "maximum": 65536, "description": "Events (240)."},
            "control_dim": {"type": "integer", "minimum": 0, "maximum": 4096, "description": "Controls (24)."},
            "init_dim": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Width of z (32)."},
            "hidden_dim": {"type": "integer", "minimum": 1, "maximum": 16384, "description": "Recurrent width (512)."},
            "num_layers": {"type": "integer", "minimum": 1, "maximum": 32, "description": "Recurrent layers (3)."},
            "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "description": "Dropout (0.3)."},
            "cell": {"type": "string", "enum": ["lstm", "gru"], "description": "Recurrent cell (lstm)."},
        },
        "additionalProperties": False,
    },
    description="Performance RNN (240 events, 24 controls); reads our checkpoints and the public .sess files.",
)
def performance_rnn(*, checkpoint: str | os.PathLike[str] | None = None, **args: Any) -> PerformanceRNN:
    """Build a Performance RNN in eval mode, optionally loading a checkpoint.

    A checkpoint with a config (ours or ``.sess``) decides the architecture; explicit args
    that disagree with it raise :class:`ModelError`. Omitted args take :data:`DEFAULTS`.

    Example:
        >>> performance_rnn(hidden_dim=8, num_layers=1).compress_spec["args"]["hidden_dim"]
        8
    """
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise ModelError(f"Unknown performance_rnn args {unknown}; known: {sorted(DEFAULTS)}.")
    explicit = {k: v for k, v in args.items() if v is not None}
    path = Path(checkpoint) if checkpoint is not None else None
    config, state = read_checkpoint(path) if path is not None else (None, None)
    resolved = _resolve_args(explicit, config, path)
    if config is not None:  # the checkpoint's own args are input too: in range before anything is built
        check_args(resolved, MODELS.get("performance_rnn").schema, path, "performance_rnn")
    return check_and_build(lambda: PerformanceRNN(**resolved), state, path).eval()
