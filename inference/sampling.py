"""Picking the next token for a whole batch at once: logit biases, penalties, grammar masks, logits
processors, temperature, top-k, top-p, min-p and seeds as per-row tensors, with no Python loop over the
vocabulary and no host synchronisation except the final read of the chosen ids.

Sampling is an exponential race: the chosen token is argmax(p / E) with E ~ Exp(1) drawn per token,
which picks each token with probability p. E is a hash of the request's seed (a random one when it
gave none), the index of the token being sampled and the candidate's id (noise.py): one pass for
the whole batch, and a seeded request's tokens do not depend on what else is in the batch. The row
functions below are pure and tested on their own. On a GPU the top-k and the race run in two
Triton kernels (kernels/sampling.py) when every row's top_k is at most 64; `_draw` is the same in
PyTorch. `launch` queues a batch's sampling and `collect` reads the ids back, so that under async
scheduling the next step can be queued in between.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from . import structured
from .noise import exponential_noise, row_key
from .sequence import Sequence
from .step_inputs import device_tensor
from .types import TokenLogprob

logger = logging.getLogger(__name__)

GREEDY_BELOW = 1e-5  # temperatures under this are treated as 0 (greedy)
# What OpenAI reports for a token that could not be picked; JSON has no -inf.
MIN_LOGPROB = -9999.0
TOPK_FAST_PATH = 1024  # when every row's top_k is at most this, only the top candidates are sorted
NEG_INF = float("-inf")
NO_TOKEN, NOT_A_NUMBER = -1, -2  # what `choose` gives a row with nothing to choose
FAILURES = {NO_TOKEN: "every token was masked out; the grammar or penalties allow nothing",
            NOT_A_NUMBER: "the model's logits are not numbers (NaN): its activations overflowed"}


def apply_logit_bias(logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor,
                     values: torch.Tensor) -> torch.Tensor:
    """OpenAI's logit_bias, in place: add `values[j]` to `logits[rows[j], ids[j]]` (a sparse
    per-row add over a (rows, vocab) batch)."""
    return logits.index_put_((rows, ids), values.to(logits.dtype), accumulate=True)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor,
                             penalty: torch.Tensor) -> torch.Tensor:
    """CTRL-style penalty (rows, vocab) over tokens seen in the prompt or output; `penalty` (rows, 1)."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor,
                             frequency: torch.Tensor) -> torch.Tensor:
    """OpenAI's penalties over the tokens generated so far (`counts` per vocabulary id)."""
    counts = counts.to(logits.dtype)
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts


def truncate_sorted(values: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                    min_p: torch.Tensor) -> torch.Tensor:
    """Mask (-inf), in logits sorted in descending order per row, what top-k, then top-p (the
    smallest set reaching p, at least one token), then min-p (below min_p × the top token's
    probability) leave out. `top_k`, `top_p`, `min_p` are (rows, 1); top_k 0 means off."""
    position = torch.arange(values.shape[-1], device=values.device)
    values = values.masked_fill((top_k > 0) & (position >= top_k), NEG_INF)
    probs = torch.softmax(values, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    values = values.masked_fill((before >= top_p) & (position > 0), NEG_INF)
    probs = torch.softmax(values, dim=-1)
    return values.masked_fill(probs < min_p * probs[:, :1], NEG_INF)


@dataclass
class PendingSample:
    """A batch's sampling queued on the device (`Sampler.launch`), read back by `collect`."""

    seqs: list[Sequence]
    logits: torch.Tensor
    chosen: torch.Tensor  # (rows,) int64 on the device: the ids, or a failure code (negative)
    errors: dict[int, str]
    host: torch.Tensor | None = None  # pinned copy of `chosen` (GPU)
    ready: torch.cuda.Event | None = None  # recorded after that copy


@dataclass
class SampledBatch:
    token_ids: list[int]  # one per row; negative where the row failed (see errors)
    logprobs: dict[int, TokenLogprob]  # row -> logprob, for rows that asked
    errors: dict[int, str]  # row -> why it failed


class Sampler:
    """Samples one token per row for a batch of sequences, each with its own parameters."""

    def __init__(self, vocab_size: int, valid_vocab: int, device: torch.device, decode):
        self.vocab_size = vocab_size
        self.valid_vocab = min(valid_vocab, vocab_size)
        self.device = device
        self.decode = decode  # token id -> text, for logprobs
        self.kernels = None  # kernels/sampling.py, once `use_kernels()` found them working

    def prepare(self, seq: Sequence) -> None:
        """Per-sequence state, made once: the noise seed and the penalty counts."""
        if seq.sampling_ready:
            return
        p = seq.params
        seq.noise_seed = int(p.seed) if p.seed is not None else secrets.randbits(64)
        if (p.repetition_penalty or 1.0) != 1.0 or p.presence_penalty or p.frequency_penalty:
            seq.counts = torch.zeros(self.vocab_size, dtype=torch.int32, device=self.device)
            seq.seen = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            seq.seen[device_tensor(seq.prompt_ids, self.device)] = True
            for token in seq.output_ids:
                seq.counts[token] += 1
                seq.seen[token] = True
        seq.sampling_ready = True

    def use_kernels(self) -> bool:
        """Draw with kernels/sampling.py from now on (GPU), if they compile here and pick what
        `_draw` picks on a test batch: compiled now, not in the middle of serving."""
        try:
            from .kernels import sampling as kernels

            generator = torch.Generator(device=self.device).manual_seed(0)
            logits = 4 * torch.randn(8, self.vocab_size, generator=generator, device=self.device)
            ks = [20, 20, 5, 13, 20, 2, 17, 20]
            ps = [SimpleNamespace(temperature=t, top_p=p, min_p=m) for t, p, m in
                  zip((0.7, 1.0, 0.3, 1.5, 0.7, 1.0, 0.9, 2.0), (0.8, 1.0, 0.5, 0.95, 1.0, 1.0,
                      0.9, 0.3), (0.0, 0.0, 0.1, 0.0, 0.05, 0.0, 0.2, 0.0), strict=True)]
            keys = [row_key(seed, 3) for seed in range(8)]
            want = self._draw(logits, max(ks), ps, ks, keys)
            got = kernels.draw(logits, max(ks), device_tensor(keys, self.device, torch.int64),
                               device_tensor([[p.temperature, p.top_p, p.min_p] for p in ps],
                                             self.device, torch.float32),
                               device_tensor(ks, self.device, torch.int32))
            if not (torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])):
                raise ValueError(f"they picked {got[0].tolist()}, PyTorch {want[0].tolist()}")
        except Exception as exc:  # a Triton build or GPU they do not run on: PyTorch draws
            logger.warning("Sampling draws with PyTorch's kernels: the fused ones failed their "
                           "check (%s: %s)", type(exc).__name__, exc)
            return False
        self.kernels = kernels
        return True

    def _column(self, values: list[float], dtype=torch.float32) -> torch.Tensor:
        return device_tensor(values, self.device, dtype).unsqueeze(1)

    def _add_logit_bias(self, logits: torch.Tensor, seqs: list[Sequence]) -> None:
        rows, ids, values = [], [], []
        for i, s in enumerate(seqs):
            for token, bias in (s.params.logit_bias or {}).items():
                rows.append(i)
                ids.append(token)
                values.append(bias)
        if rows:
            index = device_tensor([rows, ids], self.device)
            apply_logit_bias(logits, index[0], index[1],
                             device_tensor(values, self.device, logits.dtype))

    def adjust(self, logits: torch.Tensor, seqs: list[Sequence], errors: dict[int, str]) -> None:
        """In place: logit biases, padding ids, penalties, grammar masks and logits processors; the
        distribution each row samples from before temperature and truncation (what logprobs
        report)."""
        self._add_logit_bias(logits, seqs)
        if self.valid_vocab < self.vocab_size:
            logits[:, self.valid_vocab:] = NEG_INF
        rows = [i for i, s in enumerate(seqs) if s.counts is not None]
        if rows:
            index = device_tensor(rows, self.device)
            sub = logits[index]
            ps = [seqs[i].params for i in rows]
            seen = torch.stack([seqs[i].seen for i in rows])
            counts = torch.stack([seqs[i].counts for i in rows])
            sub = apply_repetition_penalty(sub, seen, self._column(
                [p.repetition_penalty or 1.0 for p in ps]))
            sub = apply_presence_frequency(sub, counts, self._column([p.presence_penalty for p in ps]),
                                           self._column([p.frequency_penalty for p in ps]))
            logits[index] = sub
        rows = []
        for i, s in enumerate(seqs):
            if s.matcher is not None:
                try:
                    s.matcher.check()
                    rows.append(i)
                except Exception as exc:
                    errors[i] = str(exc)
        if rows:
            index = device_tensor(rows, self.device)
            try:
                bitmask = structured.fill_bitmasks([seqs[i].matcher for i in rows])
            except Exception as exc:  # the grammar engine failed: its rows fail, no others
                for i in rows:
                    errors[i] = f"{type(exc).__name__}: {exc}"
            else:
                sub = logits[index]
                structured.apply_bitmasks(sub, bitmask)
                logits[index] = sub
        groups: dict[int, tuple[object, list[int]]] = {}
        for i, s in enumerate(seqs):
            for processor in s.params.logits_processors:
                groups.setdefault(id(processor), (processor, []))[1].append(i)
        for processor, rows in groups.values():
            index = device_tensor(rows, self.device)
            try:
                out = processor([seqs[i].output_ids for i in rows], logits[index])
                logits[index] = out.to(logits.dtype)
            except Exception as exc:  # a processor's failure is its requests' alone
                for i in rows:
                    errors[i] = f"{type(exc).__name__}: {exc}"

    def choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """The chosen id of each row (a device tensor): greedy rows take the argmax, the others
        race exponential noise over their truncated distribution. A row with nothing to choose
        gets NO_TOKEN (every logit -inf) or NOT_A_NUMBER (its best logit is NaN)."""
        best, chosen = logits.max(dim=-1)
        chosen = torch.where(best == NEG_INF, NO_TOKEN, chosen)
        chosen = torch.where(best.isnan(), NOT_A_NUMBER, chosen)
        params = [s.params for s in seqs]
        rows = [i for i, p in enumerate(params)
                if (p.temperature or 0.0) >= GREEDY_BELOW and p.top_k != 1]
        if not rows:
            return chosen
        ps = [params[i] for i in rows]
        index = device_tensor(rows, self.device)
        ks = [p.top_k if p.top_k and 0 < p.top_k < self.vocab_size else 0 for p in ps]
        width = max(ks) if all(ks) and max(ks) <= TOPK_FAST_PATH else self.vocab_size
        candidates = logits if len(rows) == len(seqs) else logits[index]
        # The index of the token being sampled counts those sampled but not yet read back.
        keys = [row_key(seqs[i].noise_seed, len(seqs[i].output_ids) + seqs[i].in_flight)
                for i in rows]
        if (self.kernels is not None and width < self.vocab_size
                and self.kernels.fits(self.vocab_size, width) and candidates.stride(1) == 1):
            floats = [[p.temperature or 1.0, p.top_p if p.top_p is not None else 1.0,
                       p.min_p or 0.0] for p in ps]
            picked, ok = self.kernels.draw(
                candidates, width, device_tensor(keys, self.device, torch.int64),
                device_tensor(floats, self.device, torch.float32),
                device_tensor(ks, self.device, torch.int32))
        else:
            picked, ok = self._draw(candidates, width, ps, ks, keys)
        # Rows whose distribution overflowed keep the best token (or their failure code).
        chosen[index] = torch.where(ok & (chosen[index] >= 0), picked, chosen[index])
        return chosen

    def _draw(self, candidates: torch.Tensor, width: int, ps: list, ks: list[int],
              keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`kernels/sampling.py`'s draw in PyTorch: each row's pick and whether its distribution
        was sound, for any top_k (also off) and on any device."""
        # Temperature divides after the top-k: it keeps the order, and touches `width` values only.
        values, ids = torch.topk(candidates, width, dim=-1) if width < self.vocab_size else \
            torch.sort(candidates, dim=-1, descending=True)
        values = values / self._column([p.temperature or 1.0 for p in ps])
        values = truncate_sorted(values, self._column(ks, torch.long),
                                 self._column([p.top_p if p.top_p is not None else 1.0 for p in ps]),
                                 self._column([p.min_p or 0.0 for p in ps]))
        if self.device.type == "cpu":  # truncation keeps a prefix; on a CPU reading it is free
            kept = max(1, int((values > NEG_INF).sum(dim=-1).max()))
            values, ids = values[:, :kept], ids[:, :kept]
        probs = torch.softmax(values, dim=-1)
        noise = exponential_noise(device_tensor(keys, self.device, torch.int64).unsqueeze(1), ids)
        picked = ids.gather(1, (probs / noise).argmax(dim=-1, keepdim=True)).squeeze(1)
        return picked, torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)

    def launch(self, logits: torch.Tensor, seqs: list[Sequence]) -> PendingSample:
        """Queue the whole batch's sampling on the device; nothing waits for it. On a GPU the
        chosen ids are copied to pinned memory behind it, so `collect` waits for this step alone,
        not for whatever is queued after it (the next step, under async scheduling)."""
        errors: dict[int, str] = {}
        self.adjust(logits, seqs, errors)
        chosen = self.choose(logits, seqs)
        pending = PendingSample(seqs, logits, chosen, errors)
        if self.device.type == "cuda":
            pending.host = torch.empty(chosen.shape, dtype=chosen.dtype, pin_memory=True)
            pending.host.copy_(chosen, non_blocking=True)
            pending.ready = torch.cuda.Event()
            pending.ready.record()
        return pending

    def collect(self, pending: PendingSample) -> SampledBatch:
        """The chosen ids on the host (the one synchronisation of a step), with logprobs and
        failures. Rows of sequences that ended meanwhile get no logprobs: under async scheduling
        the logits they would read are already the next step's."""
        seqs, errors = pending.seqs, pending.errors
        if pending.ready is not None:
            pending.ready.synchronize()
            token_ids = pending.host.tolist()
        else:
            token_ids = pending.chosen.tolist()
        for i, token in enumerate(token_ids):
            if token < 0 and i not in errors:
                errors[i] = FAILURES[token]
        logprob_rows = [i for i, s in enumerate(seqs)
                        if s.params.logprobs is not None and not s.finished]
        logprobs = (self._logprobs(pending.logits, pending.chosen, token_ids, seqs, logprob_rows)
                    if logprob_rows else {})
        for i, s in enumerate(seqs):
            if s.counts is not None and token_ids[i] >= 0 and i not in errors:
                s.counts[token_ids[i]] += 1
                s.seen[token_ids[i]] = True
        return SampledBatch(token_ids, logprobs, errors)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SampledBatch:
        return self.collect(self.launch(logits, seqs))

    def _logprobs(self, logits: torch.Tensor, chosen: torch.Tensor, token_ids: list[int],
                  seqs: list[Sequence], rows: list[int]) -> dict[int, TokenLogprob]:
        index = device_tensor(rows, self.device)
        logprobs = torch.log_softmax(logits[index], dim=-1)
        picked = logprobs.gather(1, chosen[index].clamp(min=0).unsqueeze(1)).squeeze(1).tolist()
        k = max(seqs[i].params.logprobs or 0 for i in rows)
        top_values, top_ids = (torch.topk(logprobs, k, dim=-1) if k else (None, None))
        top_values = top_values.tolist() if k else None
        top_ids = top_ids.tolist() if k else None
        result = {}
        for j, i in enumerate(rows):
            token = max(token_ids[i], 0)
            top = []
            for rank in range(seqs[i].params.logprobs or 0):
                value = top_values[j][rank]
                if value > NEG_INF:  # tokens masked out (by a grammar, say) are not alternatives
                    top.append((top_ids[j][rank], self.decode(top_ids[j][rank]), value))
            result[i] = TokenLogprob(token, self.decode(token), max(picked[j], MIN_LOGPROB), top)
        return result
