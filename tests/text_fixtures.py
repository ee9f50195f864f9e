"""A small text task from the shipped-by-package reviews, and a tiny BERT built locally
(random weights, a word-level vocabulary from the task's texts), saved as a backbone folder."""

from __future__ import annotations

import re
from pathlib import Path

import motune as mt


def small_text_task(n_texts: int = 240, probe_instances: int = 40, seed: int = 0) -> mt.TextTask:
    return mt.data.sentiment_task(n_texts=n_texts, probe_instances=probe_instances, seed=seed)


def build_tiny_bert(folder: Path, texts: list[str], *, layers: int = 3, hidden: int = 32) -> Path:
    import torch
    import transformers

    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", t.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
