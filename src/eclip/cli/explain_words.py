"""What `eclip explain --method interactions` writes besides the usual files: one map per content word.

Second-order interactions (Möller et al. 2025, arXiv 2408.14153) attribute the score to (token,
location) pairs; a word's map sums its tokens' rows. The overlay shows one panel per content word
of each text, `<stem>_interactions.npy` holds the full matrices, float32 (K, S, h, w) for the K
texts (rows: BOS, the tokens, EOS; shorter captions padded with zeros), and the JSON record the
words, their token rows and the tokens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eclip.methods.base import maps_to_size


def word_outputs(results: list, image_size: tuple[int, int], stem: Path) -> tuple[list[str], np.ndarray, dict]:
    """`InteractionMap.last` of one image -> panel titles, (P, H, W) word maps in [0, 1], and the JSON section.

    Writes STEM_interactions.npy.
    """
    longest = max(len(r.tokens) for r in results)
    matrix = torch.zeros(len(results), longest, *results[0].matrix.shape[-2:])
    titles, maps, section = [], [], {}
    for k, result in enumerate(results):
        matrix[k, : len(result.tokens)] = result.matrix[0].float().cpu()
        words, word_maps = result.word_maps()
        titles += [f"{word}\n({result.text[:30]})" for word in words]
        if words:
            maps.append(maps_to_size(word_maps.float().cpu(), image_size)[0])
        section[result.text] = {"tokens": result.tokens.tolist(),
                                "words": [{"word": w.text, "rows": [w.tokens.start, w.tokens.stop], "content": w.content}
                                          for w in result.words if w.content]}
    np.save(Path(f"{stem}_interactions.npy"), matrix.numpy().astype(np.float32))
    stacked = torch.cat(maps).numpy() if maps else np.zeros((0, *image_size), np.float32)
    return titles, stacked, section
