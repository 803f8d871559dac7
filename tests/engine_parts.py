"""The run's parts built without a model, for unit tests of the dispatcher and the source row:
an SD UNet's seam with no sites, and a call's ``CallInfo`` with its run."""
from __future__ import annotations


def sd_seam(pack, blend_factor: int = 4):
    """The SD UNet seam's call layout (site keys, map grid) with no model behind it."""
    return pack.fatezero_attn.families.sd_unet.UNetSeam([], blend_factor, [])


def dispatcher(pack, temporal_mode: str = "per-frame", seam=None):
    return pack.fatezero_attn.run.dispatch.Dispatcher(seam or sd_seam(pack), temporal_mode)


def call_info(pack, roles: list[str], chunk: int, plan=None, step=None, source=None, **kw):
    """A model call's info, in a run of ``plan``."""
    run = pack.fatezero_attn.run.run_state.RunState(plan)
    return pack.fatezero_attn.run.call_info.CallInfo(roles, chunk, run, step, source, **kw)
