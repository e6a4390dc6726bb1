"""Approximate key/value cache for ModernBERT encoders (Fast-dLLM's prefix cache and dual cache).

A masked diffusion model is bidirectional, so no key or value is ever exactly reusable: committing a
token changes every position's state. Fast-dLLM observed that the keys and values of positions *far
from the current block* barely move while that block is decoded, and reuses them:

    cache = EncoderKVCache(parts)                   # per decoding run; rows join with cache.add(n)
    hidden = cache.encode(rows, ids, attention, current=current, block=block, mode=mode)
    # [b, w, H]: exact at a row's first pass in a block, then valid at least at ``current``

- at a **refresh** (a row's first call, or its current block changed since its last refresh) the
  whole canvas runs through the model once, exactly as ``model.model(ids, attention)`` does, and every
  layer's keys and values (after RoPE) are kept for that row;
- every other call runs only the *active* positions through the layers; their queries attend to their
  own fresh keys/values and to the cached ones of every other position:
  - ``prefix``: active = the current block and everything after it (the suffix of masks changes
    with the block, so it is recomputed; the prompt and the finished blocks are cached);
  - ``dual``: active = the current block only; the suffix's keys/values are cached too.

Nothing is copied from the model: the cache calls the model's own embedding, layers (``Wqkv``, ``Wo``,
norms, MLP), rotary embedding and final norm, so a LoRA-wrapped or fine-tuned ModernBERT works as is.
Attention follows the model: global layers see every real position, sliding-window layers those
within ``config.sliding_window`` positions (the mask of ``create_bidirectional_sliding_window_mask``).
A refresh gives the plain forward's hidden states (to float rounding), and so does an active pass over
an unchanged canvas (tests/test_kv_cache.py); with changes inside the block it is an approximation,
measured in docs/benchmarks.md ("Generation speed").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .heads import MaskedLMParts

CACHE_MODES = ("none", "prefix", "dual")


def supports_kv_cache(parts: MaskedLMParts) -> bool:
    """True for the backbones this cache can run: ModernBERT (``ModernBertForMaskedLM``, plain or peft)."""
    config = getattr(parts.inner, "config", None)
    encoder = getattr(parts.inner, "model", None)
    return (
        getattr(config, "model_type", "") == "modernbert"
        and parts.sparse_head
        and all(hasattr(encoder, a) for a in ("embeddings", "layers", "final_norm", "rotary_emb"))
    )


MODE_IDS = {"none": 0, "prefix": 1, "dual": 2}  # per-row mode as a number, for tensors over rows


class EncoderKVCache:
    """Per-row keys/values of every layer, refreshed when a row's block changes. Rows join (``add``)
    and leave (``keep``) between calls, as in the sampler's ``DecodeState``. See the module doc."""

    def __init__(self, parts: MaskedLMParts):
        if not supports_kv_cache(parts):
            kind = getattr(getattr(parts.inner, "config", None), "model_type", type(parts.inner).__name__)
            raise ValueError(
                f"the key/value cache supports ModernBERT encoders only, not {kind!r}; use cache='none'"
            )
        self.encoder = parts.inner.model
        config = self.encoder.config
        self.layer_types = [layer.attention_type for layer in self.encoder.layers]
        self.window = int(config.sliding_window)  # |q - k| <= window in sliding layers, as transformers
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.keys: list[torch.Tensor] = []  # per layer [rows, heads, width, head_dim], built at first use
        self.values: list[torch.Tensor] = []
        self.block = torch.empty(0, dtype=torch.long)  # [rows] block each row was refreshed at (-1: never)
        self.refreshes = 0  # rows run through the whole canvas and stored (for tests and benchmarks)
        self.partial = 0  # rows run on their active positions only

    # -- rows in and out -------------------------------------------------------------------------

    def add(self, n: int) -> None:
        """``n`` rows join (as the last rows), with nothing cached yet."""
        self.block = torch.cat([self.block, torch.full((n,), -1, dtype=torch.long, device=self.block.device)])
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                store[i] = torch.cat([t, t.new_zeros(n, *t.shape[1:])])

    def keep(self, index: torch.Tensor) -> None:
        """Only rows ``index`` stay, in that order."""
        index = index.to(self.block.device)
        self.block = self.block[index]
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                store[i] = t[index.to(t.device)]

    # -- the forward pass ------------------------------------------------------------------------

    def encode(
        self,
        rows: torch.Tensor,
        ids: torch.Tensor,
        attention: torch.Tensor,
        *,
        current: torch.Tensor,
        block: torch.Tensor,
        mode: torch.Tensor,
        refresh: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [b, w, H] of canvas ``ids`` [b, w] (``attention``: 1 = real position). The
        first ``len(rows)`` rows of ``ids`` are the cache's rows ``rows``, decoding block ``block`` [r]
        whose positions are ``current`` [r, w], with ``mode`` [r] (``MODE_IDS``); any further rows
        (and rows of mode 0) run plainly. Exact everywhere for plain rows and rows refreshed now (their
        first pass in a block); for the others valid at least at the ``current`` positions. ``refresh``
        [r] (optional): rows refreshed now whatever their block (a periodic refresh inside a block)."""
        n_rows, w = len(rows), ids.shape[1]
        self.block = self.block.to(ids.device)
        kind = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)  # 0 plain, 1 refresh, 2 reuse
        cached = mode > 0
        stale = self.block[rows] != block
        if refresh is not None:
            stale = stale | refresh.to(stale.device)
        kind[:n_rows] = torch.where(cached, torch.where(stale, 1, 2), 0)
        hidden: torch.Tensor | None = None
        full = torch.arange(w, device=ids.device)
        for k in kind.unique().tolist():
            sel = (kind == k).nonzero().flatten()
            if k == 2:
                idx = self._active(current[sel], attention[sel], mode[sel] == MODE_IDS["dual"])
                self.partial += len(sel)
            else:
                idx = full.expand(len(sel), -1)
            store = rows[sel] if k == 1 else None
            out = self._run(ids[sel], attention[sel], idx, rows=rows[sel] if k == 2 else None, store=store)
            if k == 1:
                self.block[rows[sel]] = block[sel]
                self.refreshes += len(sel)
            if hidden is None:
                hidden = out.new_zeros(*ids.shape, out.shape[-1])
            if k == 2:
                hidden[sel] = hidden[sel].scatter(1, idx[..., None].expand(-1, -1, out.shape[-1]), out)
            else:
                hidden[sel] = out
        assert hidden is not None
        return hidden

    # -- internals -----------------------------------------------------------------------------

    def _active(self, current: torch.Tensor, attention: torch.Tensor, dual: torch.Tensor) -> torch.Tensor:
        """[b, n] positions each row recomputes (``dual``: its block; otherwise its block and all
        after it); shorter rows repeat their last position (a duplicate computes and writes the same
        values, so it changes nothing)."""
        pos = torch.arange(current.shape[1], device=current.device)
        first = torch.where(current, pos, current.shape[1]).min(1).values
        suffix = (pos[None, :] >= first[:, None]) & attention.bool()
        active = torch.where(dual[:, None], current, suffix)
        count = active.sum(1)
        n = int(count.max())
        rank = torch.where(active, active.long().cumsum(1) - 1, n)  # slot of each active position
        idx = torch.zeros(active.shape[0], n + 1, dtype=torch.long, device=active.device)
        idx.scatter_(1, rank, pos.expand_as(rank))
        idx = idx[:, :n]
        last = idx.gather(1, (count - 1).clamp(min=0)[:, None])  # pad with the row's last active position
        return torch.where(torch.arange(n, device=idx.device)[None, :] < count[:, None], idx, last)

    def _storage(self, rows_total: int, width: int, like: torch.Tensor) -> None:
        """Allocate (first use) or widen (a wider canvas joined) the per-layer key/value tensors, in
        the dtype of the keys ``like``: under autocast the embeddings are float32 but the keys come
        out of ``Wqkv`` in bf16/fp16, and storage in the embeddings' dtype failed in ``index_copy_``."""
        if self.keys and self.keys[0].dtype != like.dtype:  # the autocast setting changed between runs
            for store in (self.keys, self.values):
                store[:] = [t.to(like.dtype) for t in store]
        if not self.keys:
            shape = (rows_total, self.heads, width, self.head_dim)
            self.keys = [like.new_zeros(shape) for _ in self.layer_types]
            self.values = [like.new_zeros(shape) for _ in self.layer_types]
        elif self.keys[0].shape[2] < width:
            grow = width - self.keys[0].shape[2]
            for store in (self.keys, self.values):
                for i, t in enumerate(store):
                    store[i] = torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], grow, t.shape[3])], dim=2)

    def _run(
        self,
        ids: torch.Tensor,
        attention: torch.Tensor,
        idx: torch.Tensor,
        rows: torch.Tensor | None,
        store: torch.Tensor | None,
        allowed: torch.Tensor | None = None,
        write_back: bool = False,
    ) -> torch.Tensor:
        """The encoder at positions ``idx`` [b, n] of ``ids`` [b, w]. ``rows``: the keys/values of the
        other positions come from these cache rows; ``store``: ``idx`` is every position, and the
        keys/values are written to these cache rows (a refresh). Neither: the plain forward.
        ``allowed`` [b, n, w]: which keys each query may see besides padding and the window (block
        diffusion's block-causal rule); ``write_back``: the fresh keys/values of ``idx`` are written
        to the ``rows`` (the exact block cache)."""
        enc = self.encoder
        b, w = ids.shape
        x = enc.embeddings(input_ids=ids.gather(1, idx))  # [b, n, H]
        # [b, 1, n, w] which keys each query sees: real positions, and the window in sliding layers
        real = attention.bool()[:, None, None, :]
        if allowed is not None:
            real = real & allowed[:, None]
        near = (idx[:, :, None] - torch.arange(w, device=ids.device)[None, None, :]).abs() <= self.window
        masks = {"full_attention": real, "sliding_attention": real & near[:, None]}
        rope = {t: enc.rotary_emb(x, idx, t) for t in set(self.layer_types)}
        gather = idx[:, None, :, None].expand(-1, self.heads, -1, self.head_dim)
        for i, layer in enumerate(enc.layers):
            attn = layer.attn
            qkv = attn.Wqkv(layer.attn_norm(x)).view(b, -1, 3, self.heads, self.head_dim)
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=2))  # [b, heads, n, d]
            cos, sin = rope[layer.attention_type]
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
            if store is not None and i == 0:
                self._storage(len(self.block), w, k)
            if store is not None:  # index_copy_/index_select: cheaper than advanced indexing
                self.keys[i][:, :, :w].index_copy_(0, store, k)
                self.values[i][:, :, :w].index_copy_(0, store, v)
            if rows is not None:
                k = self.keys[i][:, :, :w].index_select(0, rows).scatter_(2, gather, k)
                v = self.values[i][:, :, :w].index_select(0, rows).scatter_(2, gather, v)
                if write_back:
                    self.keys[i][:, :, :w].index_copy_(0, rows, k)
                    self.values[i][:, :, :w].index_copy_(0, rows, v)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=masks[layer.attention_type], scale=self.head_dim**-0.5
            )
            x = x + attn.out_drop(attn.Wo(out.transpose(1, 2).reshape(b, -1, self.heads * self.head_dim)))
            x = x + layer.mlp(layer.mlp_norm(x))
        return enc.final_norm(x)


def _apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as transformers' ModernBERT applies it (in float32, back to the input's dtype)."""
    cos, sin = cos[:, None], sin[:, None]  # [b, 1, n, d]
    f = t.float()
    half = f.shape[-1] // 2
    rotated = torch.cat((-f[..., half:], f[..., :half]), dim=-1)
    return (f * cos + rotated * sin).to(t.dtype)


class BlockKVCache(EncoderKVCache):
    """The **exact** cache of a block-diffusion model (``diffusion.block``): keys and values of the
    prompt and the finished blocks, computed once with the block-causal rule (key block <= query
    block), so they are what the model's x0 copy computes in training and never go stale.

        cache = BlockKVCache(parts)                 # rows join with cache.add(n), leave with keep
        hidden = cache.encode(rows, ids, attention, blocks=blocks, current=cur)

    Each call runs only the positions from where the row's cache ends (``upto``: the start of the
    block it decoded at its last call) to the end of its current block: the current block's L'
    tokens, plus, once after a block is finished, that block, run in the x0 pattern in the same pass
    (the merged pass of BD3-LM) and then kept. Later positions are never seen (their block is later).
    The fresh keys and values are written to the cache each call; those of the current block are
    recomputed at the next call, so only finished ones are ever read."""

    def __init__(self, parts: MaskedLMParts):
        super().__init__(parts)
        self.upto = torch.empty(0, dtype=torch.long)  # [rows] positions whose keys/values are final

    def add(self, n: int) -> None:
        super().add(n)
        self.upto = torch.cat([self.upto, torch.zeros(n, dtype=torch.long, device=self.upto.device)])

    def keep(self, index: torch.Tensor) -> None:
        super().keep(index)
        self.upto = self.upto[index.to(self.upto.device)]

    def encode(  # type: ignore[override]
        self,
        rows: torch.Tensor,
        ids: torch.Tensor,
        attention: torch.Tensor,
        *,
        blocks: torch.Tensor,
        current: torch.Tensor,
    ) -> torch.Tensor:
        """Hidden states [b, w, H] of the canvas ``ids`` [b, w] of cache rows ``rows`` whose positions
        are in ``blocks`` [b, w] (-1: the prompt), decoding block ``current`` [b]; exact at the
        positions of the current block (others: zeros)."""
        self.block = self.block.to(ids.device)
        self.upto = self.upto.to(ids.device)
        b, w = ids.shape
        pos = torch.arange(w, device=ids.device)
        mine = (blocks == current[:, None]) & attention.bool()
        start = torch.where(mine, pos, w).min(1).values  # first position of the current block
        end = torch.where(mine, pos, -1).max(1).values + 1
        since = self.upto[rows].clamp(max=start)  # computed afresh from here (the cache ends there)
        fresh = (pos[None, :] >= since[:, None]) & (pos[None, :] < end[:, None])
        count = fresh.sum(1)
        n = int(count.max())
        rank = torch.where(fresh, fresh.long().cumsum(1) - 1, n)
        idx = torch.zeros(b, n + 1, dtype=torch.long, device=ids.device)
        idx.scatter_(1, rank, pos.expand_as(rank))
        idx = idx[:, :n]
        last = idx.gather(1, (count - 1).clamp(min=0)[:, None])  # a duplicate computes the same values
        idx = torch.where(torch.arange(n, device=ids.device)[None, :] < count[:, None], idx, last)
        allowed = blocks[:, None, :] <= blocks.gather(1, idx)[:, :, None]  # [b, n, w] block-causal
        if not self.keys or self.keys[0].shape[2] < w:
            probe = self.encoder.embeddings(input_ids=ids[:1, :1])
            self._storage(len(self.block), w, self.encoder.layers[0].attn.Wqkv(probe))
        out = self._run(ids, attention, idx, rows=rows, store=None, allowed=allowed, write_back=True)
        self.upto[rows] = start
        self.partial += b
        hidden = out.new_zeros(b, w, out.shape[-1])
        return hidden.scatter(1, idx[..., None].expand(-1, -1, out.shape[-1]), out)
