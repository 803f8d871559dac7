"""Other nodes' attention patches beside the pack's (before its nodes or after them).

ComfyUI keeps one replace per attention site, so the pack's replace (``AttentionReplace``)
takes the site and composes what else is there:
- a replace found on the site at install, or set after the fusion node (on its MODEL, or per
  call as PAG does), is called for all rows: rows the pack does not fuse get its output,
  fused rows the fused output plus its change to plain attention (``dispatch.py``);
- a replace that calls the pack's inside itself (a wrapper that logs, scales or chains) is
  used as it is: the pack's output is already in it, once;
- IP-Adapter plus, InstantID and PuLID install through a helper that calls ``.add`` on the
  replace a site holds: ``AttentionReplace`` takes such callbacks, as their own replace does,
  and every clone of a MODEL gets its own copies, so ``.add`` on one never reaches another.
"""
from __future__ import annotations

import torch


class AttentionReplace:
    """What the pack installs on one attention site: its dispatcher, plus callbacks other packs
    chain onto it. Each callback adds ``callback(out, q, k, v, extra_options, **kwargs)`` to the
    output while the sigma is within its ``sigma_start`` .. ``sigma_end``."""

    def __init__(self, dispatcher, attn: str, callbacks=(), callback_kwargs=()):
        self.dispatcher, self._attn = dispatcher, attn
        self.callbacks, self.callback_kwargs = list(callbacks), list(callback_kwargs)

    def add(self, callback, **kwargs) -> None:
        self.callbacks.append(callback)
        self.callback_kwargs.append(kwargs)
        for name, value in kwargs.items():  # their helper exposes the latest settings as attributes
            if not name.startswith("_"):
                setattr(self, name, value)

    def copy(self) -> "AttentionReplace":
        return AttentionReplace(self.dispatcher, self._attn, self.callbacks, self.callback_kwargs)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() in 0.3.75 deep-copies model_options: each clone gets its own callbacks
        return self.copy()

    def __call__(self, q, k, v, extra_options: dict, **_) -> torch.Tensor:
        out = self.dispatcher(self._attn, q, k, v, extra_options)
        if self.callbacks:
            sigma = float(extra_options["sigmas"][0]) if "sigmas" in extra_options else float("inf")
            for callback, kwargs in zip(self.callbacks, self.callback_kwargs):
                if kwargs.get("sigma_end", -float("inf")) <= sigma <= kwargs.get("sigma_start", float("inf")):
                    out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)


def own_replaces_per_clone(_model_patcher, clone) -> None:
    """``ON_CLONE``: the clone gets copies of the pack's replaces, so a later ``.add`` on the clone
    (IP-Adapter's) stays off the MODEL it was cloned from (0.38's clone shares leaves)."""
    replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {})
    for table in replace.values():
        for key, fn in table.items():
            if isinstance(fn, AttentionReplace):
                table[key] = fn.copy()


class Composition:
    """Other nodes' replaces on the pack's sites: found at install and per call, and called."""

    def __init__(self, seam):
        self.seam = seam
        self.replaces: dict = {}  # (attn, site) -> the AttentionReplace installed there
        # (attn, site) -> another node's replace that was on the site at install; each call adds
        # those set since (``for_call``)
        self.patches_at_install: dict = {}
        self.block_key_patches: set = set()  # found under the block key, which a later node may change

    def take_over_sites(self, model_patcher, dispatcher) -> None:
        """Install the pack's replace on every site, keeping what was there to compose."""
        replace = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {})
        seam = self.seam
        for attn in ("attn1", "attn2"):
            table = replace.get(attn, {})
            for key in seam.sites:
                existing, by_block_key = seam.replace_on_site(table, key)
                if by_block_key:
                    self.block_key_patches.add((attn, key))
                site = AttentionReplace(dispatcher, attn)
                if isinstance(existing, AttentionReplace):  # an earlier FateZero patch: take its place
                    owner = existing.dispatcher.composition
                    site = AttentionReplace(dispatcher, attn, existing.callbacks, existing.callback_kwargs)
                    existing = owner.patches_at_install.get((attn, key))
                    if (attn, key) in owner.block_key_patches:
                        self.block_key_patches.add((attn, key))
                if existing is not None:
                    self.patches_at_install[(attn, key)] = existing
                self.replaces[(attn, key)] = site
                seam.install_replace(model_patcher, attn, key, site)

    def for_call(self, opts: dict) -> dict:
        """Other nodes' replaces for this call: those found at install, and those set since
        (on the fusion node's output MODEL, or per call as PAG does). Ours stays installed."""
        others = dict(self.patches_at_install)
        replace = opts.get("patches_replace")
        if not replace:
            return others
        restored = None
        for attn in ("attn1", "attn2"):
            table = replace.get(attn, {})
            for key in self.seam.sites:
                fn = table.get(key)
                if fn is not None and not (isinstance(fn, AttentionReplace) and fn.dispatcher.composition is self):
                    others[(attn, key)] = fn  # set after this patch on the same site: compose it
                    restored = restored or {a: dict(tb) for a, tb in replace.items()}
                    restored[attn][key] = self.replaces[(attn, key)]
                elif (attn, key) in self.block_key_patches or (attn, key) not in self.patches_at_install:
                    block_fn = table.get(self.seam.block_key(key))
                    if block_fn is not None:
                        others[(attn, key)] = block_fn
        if restored is not None:
            opts["patches_replace"] = restored
        return others

    def call(self, attn: str, q, k, v, extra: dict, info, key, rows) -> torch.Tensor:
        """The site's rows (``rows``: ``Dispatcher.rows``) with another node's replace on it
        composed (or without, if none)."""
        if info.calling_other:  # that replace calls ours inside itself
            info.other_called_ours = True
            return rows(attn, q, k, v, extra, info, key, None)
        other = info.other_patches.get((attn, key))
        if other is None:
            return rows(attn, q, k, v, extra, info, key, None)
        info.calling_other, info.other_called_ours = True, False
        try:
            other_out = other(q, k, v, extra)
        finally:
            info.calling_other = False
        if info.other_called_ours:  # it wraps ours: its output already holds ours, as it chose
            return other_out
        return rows(attn, q, k, v, extra, info, key, other_out)
