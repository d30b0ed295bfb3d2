"""Second-order caption-image interactions (Möller, Tilli, Vu, Padó, TMLR 2025, arXiv 2408.14153).

A dual encoder's score s = e_T(t) . e_I(i) / (|e_T| |e_I|) depends on *pairs* of features, one
from each input, so the paper attributes it to (caption token, image location) pairs. With
reference inputs r_t, r_i, hidden states x_t (tokens x width) and x_i (locations x channels) at
a chosen layer of each encoder, and the integrated Jacobians
    J_T = 1/N sum_a d e_T / d x_t (r_t + a (x_t - r_t)),   a = 1, (N-1)/N, ..., 1/N
(J_I likewise), the interaction of token s with location p is
    A[s, p] = sum_{j, k} (x_t - r_t)[s, j] (J_T^T J_I)[(s, j), (p, k)] (x_i - r_i)[p, k] / (|e_T(t)| |e_I(i)|),
i.e. A = T^T I / norms with T[d, s] = sum_j J_T[d, s, j] (x_t - r_t)[s, j] (I likewise): the
interactions add up, over all pairs, to the score's second-order part. As the authors' code
(`exclip/explanation.py`), by default: N = 10 steps (the right-endpoint rule above, the reference
itself excluded); the hidden state entering the last block of each encoder (their default
layer 11 of ViT-B/16's 12 blocks); the image reference is the all-zeros input (the mean colour
after normalisation); the caption reference is [BOS] "!" [EOS] (token 0 between the two
special tokens), padded with zeros; the Jacobians of the unnormalised embeddings, divided by the
two norms at the end. For ResNets (their default layer does not exist there) we take the
attention pool's input, the last stage's output, as the image side's layer (our choice).

A map per word sums the rows of the word's tokens (the authors' span selection); the map of a
whole text (`raw_maps`, what `eclip evaluate` scores) sums its content words, i.e. every word
except the function words in `FUNCTION_WORDS` and punctuation (our choice; the paper selects
spans by hand). Cost: per image, D backward passes through the last image block (batched, in
chunks of `chunk` embedding dimensions), per text the same through the last text block; the
pairs then cost one matrix product each. The method is handed texts as embeddings (K, D), so it
recovers each caption from the model's text cache (`DenseCLIP.cached_text`): a verbatim text or a
single-template prompt works, a prompt ensemble has no single caption and is refused. The
per-token interactions of each image travel with its maps (`Maps.extra["interactions"]`,
`ImageInteractions`): what `eclip explain` writes besides the maps.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from eclip.errors import MethodError
from eclip.methods.base import ImageExtra, Method, register
from eclip.methods.scoring import pooled_output
from eclip.methods.vit_paths import pooled_after, tokens_before

#: Words that carry no content of their own: articles, prepositions, conjunctions, copulas.
FUNCTION_WORDS = frozenset("""
a an the this that these those of in on at to from by with without into onto over under above below behind
beside besides between among near next left right front top bottom and or but nor so as than then there here
is are was were be been being has have had it its his her their our your my some any each every all both
""".split())


@dataclass
class Word:
    """A whitespace-separated word of a caption and the token positions it occupies (BOS is position 0)."""

    text: str
    tokens: slice

    @property
    def content(self) -> bool:
        """False for function words and pure punctuation."""
        bare = re.sub(r"[^\w'-]", "", self.text.lower())
        return bool(bare) and bare not in FUNCTION_WORDS


@dataclass
class Interactions:
    """The interactions of one caption with B images.

    matrix: (B, S, h, w) one map per token position 0..EOS (BOS and EOS included), unnormalised;
    tokens: (S,) the token ids; words: the caption's words with their token positions.
    """

    text: str
    matrix: torch.Tensor
    tokens: torch.Tensor
    words: list[Word]

    def word_maps(self, content_only: bool = True) -> tuple[list[str], torch.Tensor]:
        """The (content) words and their maps (B, n_words, h, w), each the sum of its tokens' rows."""
        words = [w for w in self.words if w.content or not content_only]
        if not words:
            return [], self.matrix[:, :0]
        return [w.text for w in words], torch.stack([self.matrix[:, w.tokens].sum(dim=1) for w in words], dim=1)

    def text_map(self) -> torch.Tensor:
        """(B, h, w): the sum over the content words (over every word when none is a content word)."""
        words = [w for w in self.words if w.content] or self.words
        rows = [i for w in words for i in range(w.tokens.start, w.tokens.stop)]
        return self.matrix[:, rows].sum(dim=1)

    def for_image(self, b: int) -> Interactions:
        """The same caption's interactions with image `b` alone (matrix (1, S, h, w))."""
        return Interactions(self.text, self.matrix[b : b + 1], self.tokens, self.words)


@dataclass
class ImageInteractions(ImageExtra):
    """One image's interactions with each of the K captions: the extra output `Maps.extra["interactions"]`.

    array: (K, S, h, w) float32, for each caption one map per token position (BOS, the tokens,
    EOS; shorter captions padded with zeros); record: per caption its tokens and its content words
    with their token rows; panels: one map per content word of each caption (a word's map sums its
    tokens' rows).
    """

    captions: list[Interactions]

    def array(self) -> np.ndarray:
        longest = max(len(c.tokens) for c in self.captions)
        matrix = torch.zeros(len(self.captions), longest, *self.captions[0].matrix.shape[-2:])
        for k, caption in enumerate(self.captions):
            matrix[k, : len(caption.tokens)] = caption.matrix[0].float().cpu()
        return matrix.numpy()

    def record(self) -> dict:
        return {c.text: {"tokens": c.tokens.tolist(),
                         "words": [{"word": w.text, "rows": [w.tokens.start, w.tokens.stop], "content": w.content}
                                   for w in c.words if w.content]}
                for c in self.captions}

    def panels(self) -> tuple[list[str], torch.Tensor]:
        titles, maps = [], []
        for caption in self.captions:
            words, word_maps = caption.word_maps()
            titles += [f"{word}\n({caption.text})" for word in words]  # the figure wraps and shortens it
            maps.append(word_maps[0].float().cpu())
        return titles, torch.cat(maps)


def steps_alphas(steps: int) -> torch.Tensor:
    """(N,) 1, (N-1)/N, ..., 1/N: the authors' interpolation points between reference (0) and input (1)."""
    return 1.0 - torch.arange(steps, dtype=torch.float32) / steps


def integrated_jacobian(tail: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reference: torch.Tensor,
                        steps: int, positions: Sequence[int], chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Jacobian contracted with the input difference, per position.

    `x`, `reference`: one input's hidden state (any shape); `positions`: the dims of `x` that index
    positions (the others are summed over, e.g. channels); `tail`: (N, *x.shape) -> (N, D) the rest
    of the encoder. Returns I (D, *positions) with
    I[d, p] = 1/N sum_a sum_j d e_d / d h[p, j] (r + a (x - r)) * (x - r)[p, j], and e(x) (D,).
    The derivative w.r.t. a per-position interpolation coefficient is exactly that contraction.
    """
    alphas = steps_alphas(steps).to(x.device, torch.float32)
    shape = [x.shape[i] if i in positions else 1 for i in range(x.dim())]
    coeff = alphas.view(-1, *[1] * x.dim()).expand(steps, *shape).clone().requires_grad_(True)
    delta = (x - reference).float()
    hidden = reference.float()[None] + coeff * delta[None]
    emb = tail(hidden.to(x.dtype)).float()  # (N, D)
    dims = emb.shape[1]
    rows = []
    for start in range(0, dims, chunk):
        part = range(start, min(dims, start + chunk))
        select = torch.zeros(len(part), steps, dims, device=emb.device)
        select[torch.arange(len(part)), :, torch.tensor(list(part))] = 1.0
        (grad,) = torch.autograd.grad(emb, coeff, grad_outputs=select, is_grads_batched=True, retain_graph=True)
        rows.append(grad.mean(dim=1))
    keep = [d for d in range(x.dim()) if d in positions]
    out = torch.cat(rows).reshape(dims, *shape)
    return out.reshape(dims, *[x.shape[i] for i in keep]), emb[0].detach()


def reference_tokens(model, length: int) -> torch.Tensor:
    """(length,) the authors' caption reference: BOS, token 0, EOS, then zeros."""
    empty = model.tokenizer([""])[0]
    ref = torch.zeros(length, dtype=empty.dtype)
    ref[0], ref[2] = empty[0], empty[1]
    return ref


@contextmanager
def hooked_input(block: torch.nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]):
    """Run `block` with its hidden-state input passed through `replace`; the hook is removed on exit."""

    def hook(module, args, kwargs):
        if args:
            return (replace(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def caption_words(model, text: str, tokens: torch.Tensor) -> list[Word]:
    """The whitespace-separated words of `text` and their token positions (CLIP's BPE never merges across spaces)."""
    words, position = [], 1
    for word in text.split():
        count = int(model.tokenizer([word])[0].argmax()) - 1  # tokens between BOS and EOS
        words.append(Word(word, slice(position, position + count)))
        position += count
    if position != int(tokens.argmax()):
        raise MethodError(f"cannot align the words of {text!r} with its tokens; method 'interactions' needs CLIP's BPE tokenizer")
    return words


def text_jacobian(model, text: str, steps: int, layer: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(D, S) T for the caption's positions 0..EOS, its tokens (S,), and |e_T|."""
    tokens = model.tokenize([text])[0]
    eos = int(tokens.argmax())
    batch = torch.stack([tokens, reference_tokens(model, len(tokens)).to(tokens.device)])
    block = model.text_blocks[layer]
    captured = {}

    def capture(hidden: torch.Tensor) -> torch.Tensor:
        first = hidden.shape[0] == 2 and hidden.shape[1] == len(tokens)
        captured.update(first=first, hidden=(hidden if first else hidden.transpose(0, 1)).detach())
        return hidden

    with torch.no_grad(), hooked_input(block, capture):
        model.encode_tokens(batch)
    x, r = captured["hidden"][0], captured["hidden"][1]
    first = captured["first"]

    def tail(hidden: torch.Tensor) -> torch.Tensor:  # (N, S, C) -> (N, D)
        state = hidden if first else hidden.transpose(0, 1)
        with hooked_input(block, lambda _: state):
            return model.encode_tokens(tokens[None].expand(len(hidden), -1))

    jac, emb = integrated_jacobian(tail, x, r, steps, positions=[0], chunk=chunk)
    return jac[:, : eos + 1], tokens[: eos + 1], emb.norm()


def image_states(model, images: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], list[int]]:
    """The image side's layer: states (B + 1, ...) of the images and, last, the all-zeros reference;
    the tail (N, ...) -> (N, D) from there to the pooled embedding; the dims of a state that index locations.

    ViT: the tokens entering the last block (class token first); ResNet: the attention pool's input.
    """
    reference = torch.zeros_like(images[:1])
    if model.arch == "vit":
        start = model.num_layers - 1
        states = tokens_before(model, torch.cat([images, reference]), start).detach()
        return states, (lambda hidden: pooled_after(model, hidden, start)), [0]
    states = model.features(torch.cat([images, reference])).detach()

    def tail(hidden: torch.Tensor) -> torch.Tensor:
        out = model.attention_pool(hidden)
        return pooled_output(model, out[:, 0], out[:, 1:])

    return states, tail, [1, 2]


def image_jacobians(model, images: torch.Tensor, steps: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, h, w) I per image location (the ViT's class token left out, as the authors do) and (B,) |e_I|."""
    states, tail, positions = image_states(model, images)
    jacs, norms = [], []
    for b in range(len(images)):
        jac, emb = integrated_jacobian(tail, states[b], states[-1], steps, positions, chunk)
        jacs.append(jac if model.arch != "vit" else model.tokens_to_grid(jac[:, 1:].T[None], images)[0].permute(2, 0, 1))
        norms.append(emb.norm())
    return torch.stack(jacs), torch.stack(norms)


def interactions(model, images: torch.Tensor, texts: Sequence[str], steps: int = 10, chunk: int = 32,
                 text_cache: dict | None = None) -> list[Interactions]:
    """The (token, location) interactions of each caption with each image (`Interactions` per text).

    `text_cache`: a dict that keeps each caption's text side (it does not depend on the image).
    """
    cache = {} if text_cache is None else text_cache
    with torch.enable_grad():
        image_side, image_norms = image_jacobians(model, images, steps, chunk)  # (B, D, h, w), (B,)
        out = []
        for text in texts:
            key = (id(model), text, steps)
            if key not in cache:
                cache[key] = text_jacobian(model, text, steps, len(model.text_blocks) - 1, chunk)
            jac, tokens, text_norm = cache[key]
            matrix = torch.einsum("ds,bdhw->bshw", jac, image_side) / (text_norm * image_norms)[:, None, None, None]
            out.append(Interactions(text, matrix.detach(), tokens.cpu(), caption_words(model, text, tokens)))
    return out


@register
class InteractionMap(Method):
    """Second-order (caption token, image location) interactions, summed over the caption's content words."""

    name = "interactions"
    paper = "Second-order interactions: Möller, Tilli, Vu, Padó 2025 (TMLR), arXiv 2408.14153"
    needs_grad = True

    steps: int = 10  # interpolation steps N (10 in the authors' code)
    chunk: int = 32  # embedding dimensions per batched backward
    text_cache: dict = field(default_factory=dict, init=False, repr=False)  # each caption's text side, once per model

    def texts_of(self, model, text_features: torch.Tensor) -> list[str]:
        """The captions behind (K, D) embeddings, from the model's text cache."""
        texts = [model.cached_text(f) for f in text_features]
        if any(t is None for t in texts):
            raise MethodError("method 'interactions' explains a caption's tokens, and a prompt ensemble is not one caption; "
                              "give the texts verbatim or with a single template (e.g. --template 'a photo of a {}.')")
        return texts

    def raw_maps(self, model, images, text_features):
        return self.raw_maps_and_extra(model, images, text_features)[0]

    def raw_maps_and_extra(self, model, images, text_features):
        """The text maps (B, K, h, w) and, per image, the per-token interactions (`ImageInteractions`)."""
        results = interactions(model, images, self.texts_of(model, text_features), self.steps, self.chunk, self.text_cache)
        per_image = [ImageInteractions([r.for_image(b) for r in results]) for b in range(len(images))]
        return torch.stack([r.text_map() for r in results], dim=1), {"interactions": per_image}
