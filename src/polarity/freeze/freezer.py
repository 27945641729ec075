"""``Freezer``: Freeze-SGD on any ``nn.Module`` and any ``torch.optim.Optimizer``.

After each optimizer step (a step post-hook), every constrained entry with ``W * T < 0`` is
reset by one of the methods of ``methods.py``; entries with ``T = 0``, parameters without a
template entry (biases, by default) and the optimizer's state are never touched.  ``impose``
makes a module comply once, by flipping by default (the magnitude control of SPEC §3).

Usage::

    template = Template.from_module(pretrained)          # or Template.random(model, seed=0)
    impose(model, template)                              # comply, keeping the |w| multiset
    freezer = Freezer(model, template, reset="posRand")
    handle = freezer.attach(optimizer)                   # reset after every optimizer.step()

Wrapped and distributed models (docs/integrations.md): names are matched through the prefixes
of ``torch.compile`` and DDP, and a tied parameter is constrained once (``template.bind``).
Under DDP every rank draws the same posRand values (the stream is keyed by seed, step and
parameter, and a ``seed=None`` is taken from rank 0), so ranks stay identical.  Under FSDP2
(DTensor parameters) each rank resets its own shard against the matching slice of the template,
drawing by each entry's index in the full parameter: the values a non-sharded run would draw,
with no communication.  A step that ``torch.amp.GradScaler`` skips never calls
``optimizer.step()``, so it runs no reset.

The freezer follows the module: a constrained parameter replaced after it was built (a new layer,
``load_state_dict(assign=True)``, ``.to("meta")``, a dtype change) is noticed at the next step by
identity, and the freezer binds the module's current parameters (or refuses them with the reason).
``LBFGS`` keeps curvature pairs of the steps it took; a reset changes the step, so after a step
that reset entries the freezer clears LBFGS's history (docs/integrations.md).
"""
from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping

import torch
from torch import nn

from .. import _numba
from ..seeds import parameter_step_seed
from ..template import Template, TemplateError, _dtensor_class, iter_pairs, violating
from .methods import DEFAULT_EPS, ResetError, check_eps, check_method
from .numba_reset import reset_numpy
from .torch_reset import reset_torch_

_NUMBA_DTYPES = (torch.float32, torch.float64)


def reset_(w: torch.Tensor, t: torch.Tensor, method: str = "posRand", eps: float = DEFAULT_EPS,
           generator: torch.Generator | None = None, seed: int | None = None,
           index: torch.Tensor | None = None) -> torch.Tensor:
    """Reset, in place, the entries of ``w`` that violate the sign tensor ``t`` (broadcastable to
    ``w``; int8 or floating).  Returns the number of entries reset as a 0-d tensor (no host sync
    on an accelerator).  posRand draws from the counter-based stream of ``seed`` (drawn from
    ``generator``, or torch's global generator, when not given), so the same seed gives the same
    values on every device; ``index`` (int64, shaped like ``w``) is each entry's index in that
    stream, by default its row-major position in ``w`` (a shard passes its place in the full
    tensor).  Contiguous float32/float64 CPU tensors take the fused numba loop, split over
    ``torch.get_num_threads()`` threads; the values do not depend on the split."""
    code = check_method(method)
    eps = check_eps(eps)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    seed = int(seed) & 0xFFFFFFFF
    with torch.no_grad():
        if (index is None and _numba.AVAILABLE and w.device.type == "cpu"
                and w.dtype in _NUMBA_DTYPES and w.is_contiguous() and t.shape == w.shape):
            tt = t if (t.dtype == torch.int8 and t.is_contiguous()) else t.to(torch.int8).contiguous()
            k = reset_numpy(w.view(-1).numpy(), tt.view(-1).numpy(), code, eps, seed,
                            threads=torch.get_num_threads())
            return torch.tensor(k)
        return reset_torch_(w, t, method, eps, seed, index)


def _shard_layout(name: str, p: torch.Tensor):
    """For a sharded parameter (a DTensor, as FSDP2 makes): ``(offset, shape, strides)`` of this
    rank's block in the full parameter (the full tensor's row-major strides); ``None`` for a plain
    tensor.  Only ``Shard`` and ``Replicate`` placements give a block."""
    dtensor = _dtensor_class()
    if dtensor is None or not isinstance(p, dtensor):
        return None
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if not all(type(pl) is Shard or isinstance(pl, Replicate) for pl in p.placements):
        raise TemplateError(f"parameter {name!r} is laid out as {p.placements}; the Freezer "
                            "resets Shard and Replicate placements (FSDP2, tensor parallel)")
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    strides = torch.empty(tuple(p.shape), device="meta").stride()
    return tuple(offset), tuple(shape), tuple(strides)


def _local(p: torch.Tensor, layout) -> torch.Tensor:
    """The tensor to reset in place: the parameter's data, or this rank's shard of it."""
    return p.data if layout is None else p.to_local()


def _global_index(layout, device) -> torch.Tensor:
    """The index of every entry of a shard in its full parameter (row-major), as int64."""
    offset, shape, strides = layout
    idx = torch.zeros(shape, dtype=torch.int64, device=device)
    for d, (o, n, st) in enumerate(zip(offset, shape, strides)):
        view = [1] * len(shape)
        view[d] = n
        idx += (torch.arange(o, o + n, dtype=torch.int64, device=device) * st).view(view)
    return idx


def _template_slice(t: torch.Tensor, layout) -> torch.Tensor:
    """The part of the full sign tensor ``t`` that a shard holds."""
    if layout is None:
        return t
    offset, shape, _ = layout
    return t[tuple(slice(o, o + n) for o, n in zip(offset, shape))].contiguous()


def _shared_seed(seed: int) -> int:
    """Rank 0's seed when torch.distributed runs several processes (a collective), else ``seed``:
    ranks of a DDP run must draw the same posRand values to stay identical."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [seed]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])
    return seed


def innermost(optimizer):
    """The torch optimizer inside a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``): its ``step()`` is the one that runs step hooks."""
    while True:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            return optimizer
        optimizer = inner


# Optimizers whose state models the curvature from the steps they took (secant pairs): a reset
# changes the step behind their back, so their history is cleared after a step that reset entries.
_CURVATURE_HISTORY = (torch.optim.LBFGS,)


class _StepHook:
    """One Freezer's step post-hook on one optimizer (the freezer is found by other freezers)."""

    def __init__(self, freezer: "Freezer", clear_history: bool):
        self.freezer, self.clear_history = freezer, clear_history

    def __call__(self, optimizer, args, kwargs) -> None:
        k = self.freezer.project()
        if self.clear_history and int(k) > 0:
            optimizer.state.clear()


def _watch_list(module: nn.Module, pairs) -> tuple:
    """``(dict, key, object)`` for every slot the bindings rest on: each module on the path to a
    constrained parameter and the parameter's own slot, under every name it has.  The bindings are
    current while ``dict.get(key) is object`` holds for all of them."""
    bound = {id(p) for _, p, _ in pairs}
    seen, out = set(), []
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) not in bound:
            continue
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            child = owner._modules[part]
            if (id(owner), part) not in seen:
                seen.add((id(owner), part))
                out.append((owner._modules, part, child))
            owner = child
        out.append((owner._parameters, leaf, p))
    return tuple(out)


class Freezer:
    """Enforce ``template`` on ``module``'s parameters after every optimizer step.

    ``reset`` is one of :data:`RESET_METHODS`; ``seed`` fixes the posRand draws (``None`` takes a
    seed from torch's global generator, so ``torch.manual_seed`` makes runs reproducible; under
    torch.distributed, rank 0's, so build the freezer on every rank).  The draws of parameter i
    at step s come from ``parameter_step_seed(seed, s, i)``, the same on every device.  The
    freezer keeps its own stream: attaching it does not change the model's data order or dropout
    draws.  Build it after wrapping or sharding the model, as the optimizer.  A parameter the
    module replaces later (by identity, or its dtype) is bound afresh at the next step.
    """

    def __init__(self, module: nn.Module, template: Template, reset: str = "posRand",
                 eps: float = DEFAULT_EPS, seed: int | None = None):
        if not isinstance(template, Template):
            raise TypeError(f"template must be a polarity.Template, got {type(template).__name__}")
        check_method(reset)
        self.module = module
        self.template = template
        self.reset = reset
        self.eps = check_eps(eps)
        if seed is None:
            seed = _shared_seed(int(torch.randint(0, 2**62, (1,))))
        self.seed = int(seed)
        self.steps = 0
        self.last_reset: torch.Tensor | None = None  # entries reset by the latest project()
        self.total_reset: torch.Tensor | int = 0  # entries reset since construction
        self._hooks: dict[int, tuple[weakref.ref, torch.utils.hooks.RemovableHandle]] = {}
        self._bind()

    def _bind(self) -> None:
        """Match the template to the module's current parameters (``template.bind``) and check
        that each can hold the resets (not on the meta device; ``eps`` normal in its dtype)."""
        pairs = [(name, p, t) for name, p, t in iter_pairs(self.template, self.module)]
        for name, p, _ in pairs:
            if p.device.type == "meta":
                raise TemplateError(f"parameter {name!r} is on the meta device (no data to "
                                    "constrain); materialise the model (e.g. to_empty + init) first")
            try:
                check_eps(self.eps, p.dtype)
            except ResetError as e:
                raise ResetError(f"parameter {name!r}: {e}") from None
        self._pairs = pairs
        self._layouts = {name: _shard_layout(name, p) for name, p, _ in pairs}
        self._dev: dict[str, torch.Tensor] = {}
        self._watch = _watch_list(self.module, pairs)
        self._dtypes = tuple((p, p.dtype) for _, p, _ in pairs)

    def _current(self) -> None:
        """Rebind when the module no longer holds the bound parameters (a replaced layer,
        ``load_state_dict(assign=True)``, ``.to("meta")``) or one changed its dtype: an identity
        check per bound slot, no walk over the module."""
        if (all(d.get(k) is v for d, k, v in self._watch)
                and all(p.dtype is dt for p, dt in self._dtypes)):
            return
        self._bind()
        held = {id(p) for opt in self._optimizers() for g in opt.param_groups for p in g["params"]}
        absent = [name for name, p, _ in self._pairs if id(p) not in held]
        if held and absent:
            warnings.warn("the module's constrained parameters changed, and some are not "
                          f"optimised by the optimizers this Freezer is attached to: {absent[:5]} "
                          "(add them, e.g. optimizer.add_param_group)", stacklevel=3)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers this freezer's hook is still registered on."""
        out = []
        for ref, handle in self._hooks.values():
            opt = ref()
            if opt is not None and handle.id in opt._optimizer_step_post_hooks:
                out.append(opt)
        return out

    def _sign(self, name: str, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The signs of the part of ``name`` held in ``p`` (the whole, or this rank's shard), on
        ``p``'s device, cached."""
        cached = self._dev.get(name)
        if cached is None or cached.device != p.device:
            cached = _template_slice(t, self._layouts[name]).to(p.device)
            self._dev[name] = cached
        return cached

    def _views(self):
        """(index, name, tensor to reset, its signs, its stream index or None) per parameter."""
        for i, (name, p, t) in enumerate(self._pairs):
            layout = self._layouts[name]
            w = _local(p, layout)
            index = None if layout is None else _global_index(layout, w.device)
            yield i, name, w, self._sign(name, w, t), index

    @torch.no_grad()
    def project(self, sync: bool = False) -> torch.Tensor | int:
        """Apply the reset now.  Returns the number of entries reset (on this rank's shards,
        under FSDP): a 0-d tensor on the parameters' device (no host sync), or an ``int`` when
        ``sync=True``."""
        self._current()
        self.steps += 1
        total = None
        for i, name, w, t, index in self._views():
            k = reset_(w, t, self.reset, self.eps,
                       seed=parameter_step_seed(self.seed, self.steps, i), index=index)
            k = k.to(w.device, non_blocking=True)
            total = k if total is None else total + k
        if total is None:
            total = torch.zeros((), dtype=torch.int64)
        self.last_reset = total
        self.total_reset = total + self.total_reset
        return int(total) if sync else total

    __call__ = project

    def attach(self, optimizer: torch.optim.Optimizer):
        """Run :meth:`project` after every ``optimizer.step()``; a trainer's wrapper (accelerate's
        ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``) is unwrapped to the torch
        optimizer inside (:func:`innermost`).  Returns a handle with ``.remove()``.  Attaching
        again to the same optimizer warns and returns the existing handle, and so does attaching a
        second Freezer that constrains some of the same parameters (each step would reset them
        twice).  Under ``LBFGS`` a step that reset entries also clears LBFGS's history."""
        optimizer = innermost(optimizer)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach() needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._current()
        ref, old = self._hooks.get(id(optimizer), (None, None))
        if ref is not None and ref() is optimizer and old.id in optimizer._optimizer_step_post_hooks:
            warnings.warn("this Freezer is already attached to this optimizer; returning the "
                          "existing handle", stacklevel=2)
            return old
        mine = {id(p): name for name, p, _ in self._pairs}
        for hook in optimizer._optimizer_step_post_hooks.values():
            if isinstance(hook, _StepHook) and hook.freezer is not self:
                shared = [mine[id(p)] for _, p in hook.freezer.named_parameters() if id(p) in mine]
                if shared:
                    warnings.warn(f"another Freezer attached to this optimizer constrains "
                                  f"{shared[:5]} too: each step would reset them twice (give "
                                  "each parameter one Freezer)", stacklevel=2)
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        absent = [name for name, p, _ in self._pairs if id(p) not in held]
        if absent:
            warnings.warn(f"constrained parameters not optimised by this optimizer: {absent[:5]}",
                          stacklevel=2)
        handle = optimizer.register_step_post_hook(
            _StepHook(self, isinstance(optimizer, _CURVATURE_HISTORY)))
        self._hooks[id(optimizer)] = (weakref.ref(optimizer), handle)
        return handle

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """The constrained parameters, each once (a tied one once), with the model's names."""
        self._current()
        return [(name, p) for name, p, _ in self._pairs]

    @torch.no_grad()
    def violations(self) -> int:
        """Constrained entries that break the template now (``W * T < 0``, or NaN), each tied
        parameter counted once and, under FSDP, on this rank's shards only (no communication)."""
        self._current()
        return sum(int(violating(w, t).sum()) for _, _, w, t, _ in self._views())

    def state_dict(self) -> dict:
        """Everything that determines the next resets (the template travels separately)."""
        return {"seed": self.seed, "steps": self.steps, "reset": self.reset, "eps": self.eps}

    def load_state_dict(self, state: Mapping) -> None:
        missing = {"seed", "steps", "reset", "eps"} - set(state)
        if missing:
            raise KeyError(f"Freezer state lacks {sorted(missing)}")
        check_method(state["reset"])
        self.eps = check_eps(state["eps"])
        self.reset = state["reset"]
        self.seed, self.steps = int(state["seed"]), int(state["steps"])
        self._bind()  # the restored eps must be a normal number in every parameter's dtype


@torch.no_grad()
def impose(module: nn.Module, template: Template, method: str = "flip") -> int:
    """Make ``module`` comply with ``template`` in place and return the number of entries
    changed.  ``flip`` (the default) keeps the multiset of |w| exactly: it is the magnitude
    control of SPEC §3.  The other reset methods are accepted but change magnitudes.  Under
    FSDP each rank changes its own shard, with no communication (a count of its shards)."""
    check_method(method)
    total = 0
    for name, p, t in iter_pairs(template, module):
        layout = _shard_layout(name, p)
        w = _local(p, layout)
        index = None if layout is None else _global_index(layout, w.device)
        total += int(reset_(w, _template_slice(t, layout).to(w.device), method, index=index))
    return total


__all__ = ["Freezer", "impose", "innermost", "reset_"]
