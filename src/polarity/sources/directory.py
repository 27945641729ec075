"""A source directory: a trained source network as a shippable, verifiable object.

    <dir>/weights.safetensors   the source network's state dict
    <dir>/template.polarity     its sign template (1 bit per sign)
    <dir>/manifest.json         what it is and how to make it again (below)

The manifest names the dataset (with its label, e.g. "CIFAR-10 (JPEG copy)") and classes, the
architecture and its arguments, the recipe, the accuracy on the whole test split, the exact
command that regenerates the directory, the polarity and torch versions, the machine, and the
sha256 and size of both files; :func:`read_source_dir` checks them before anything is used.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write, sha256_file
from ..template import Template, TemplateError

FORMAT = "polarity-source"
FORMAT_VERSION = 1
WEIGHTS, TEMPLATE, MANIFEST = "weights.safetensors", "template.polarity", "manifest.json"


class SourceError(ValueError):
    """A source directory that is missing, incomplete, corrupt or not a source directory."""


@dataclass
class SourceNetwork:
    """A source read from its directory."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    template: Template
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def dataset_label(self) -> str:
        return self.manifest["dataset_label"]


def write_source_dir(path: str | Path, model: torch.nn.Module, *, name: str, recipe,
                     dataset_label: str, classes, metrics: dict, command: str) -> Path:
    """Write ``model`` (trained by ``recipe``) as a source directory at ``path``."""
    from .._version import __version__

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SourceError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path / WEIGHTS, lambda tmp: _save_weights(state, tmp))
    Template.from_module(model).save(path / TEMPLATE)
    files = {f: {"sha256": sha256_file(path / f), "bytes": (path / f).stat().st_size}
             for f in (WEIGHTS, TEMPLATE)}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
        "dataset": recipe.dataset, "dataset_label": dataset_label, "classes": list(classes),
        "arch": recipe.arch, "model": {**recipe.model_kwargs(), "num_classes": len(classes)},
        "recipe": dataclasses.asdict(recipe),
        **{k: v for k, v in metrics.items() if k != "history"},
        "history": metrics.get("history", []),
        "command": command, "polarity_version": __version__, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    atomic_write(path / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return path


def _save_weights(state: dict[str, torch.Tensor], path: str) -> None:
    """``safetensors.torch.save_file``, whose I/O failures (a full disk: "I/O error: No space left
    on device (os error 28)") are raised as the ``OSError`` they are, not as ``SafetensorError``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, path, metadata={"format": FORMAT})
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), path) from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind(v) -> str:
    return f"{type(v).__name__} {json.dumps(v)[:40]}"


def check_manifest(manifest: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """Check the types (and ranges) of a manifest's fields; raise :class:`SourceError` with one
    line naming the file and the first bad field.  Returns the manifest."""
    def bad(field: str, want: str) -> SourceError:
        return SourceError(f"{where}: field {field!r} must be {want}, got "
                           f"{_kind(manifest[field.split('.')[0]]) if '.' not in field else 'something else'}")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SourceError(f"{where} is not a polarity source manifest (no \"format\": \"{FORMAT}\")")
    v = manifest.get("format_version")
    if not _is_int(v) or v < 1:
        raise bad("format_version", "a positive integer") if "format_version" in manifest else \
            SourceError(f"{where} lacks the field 'format_version'")
    if v > FORMAT_VERSION:
        raise SourceError(f"{where} has format version {v}; this polarity reads up to "
                          f"{FORMAT_VERSION}: upgrade polarity")
    for key in ("dataset", "dataset_label", "arch", "model", "files", "classes", "test_accuracy"):
        if key not in manifest:
            raise SourceError(f"{where} lacks the field {key!r}")
    for key in ("dataset", "dataset_label", "arch"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise bad(key, "a non-empty string")
    for key in ("name", "command", "created", "polarity_version", "torch", "machine"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], str):
            raise bad(key, "a string")
    classes = manifest["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise bad("classes", "a list of at least two class names (strings)")
    model = manifest["model"]
    if not isinstance(model, dict):
        raise bad("model", "a mapping of the architecture's arguments")
    if "num_classes" in model and (not _is_int(model["num_classes"]) or model["num_classes"] != len(classes)):
        raise SourceError(f"{where}: field 'model.num_classes' must be the number of classes "
                          f"({len(classes)}), got {_kind(model['num_classes'])}")
    for k, val in model.items():
        if not isinstance(k, str) or not (_is_num(val) or isinstance(val, (str, bool))):
            raise SourceError(f"{where}: field 'model.{k}' must be a number, string or boolean, "
                              f"got {_kind(val)}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise bad("files", f"a mapping of file name to {{sha256, bytes}} (for {WEIGHTS} and {TEMPLATE})")
    for f in (WEIGHTS, TEMPLATE):
        d = files.get(f)
        if not isinstance(d, dict):
            raise SourceError(f"{where}: field 'files' lists no {f} (a mapping with sha256 and bytes)")
        sha, size = d.get("sha256"), d.get("bytes")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise SourceError(f"{where}: field 'files.{f}.sha256' must be 64 lower-case hex digits, got {_kind(sha)}")
        if not _is_int(size) or size < 0:
            raise SourceError(f"{where}: field 'files.{f}.bytes' must be a non-negative integer, got {_kind(size)}")
    acc = manifest["test_accuracy"]
    if not _is_num(acc) or not 0 <= acc <= 1:
        raise bad("test_accuracy", "a number in [0, 1]")
    for key in ("init_agreement", "test_loss"):
        val = manifest.get(key)
        if val is not None and (not _is_num(val) or (key == "init_agreement" and not 0 <= val <= 1)):
            raise bad(key, "a number in [0, 1]" if key == "init_agreement" else "a finite number")
    for key in ("test_images", "train_images", "threads"):
        if key in manifest and (not _is_int(manifest[key]) or manifest[key] < 0):
            raise bad(key, "a non-negative integer")
    if "train_seconds" in manifest and (not _is_num(manifest["train_seconds"]) or manifest["train_seconds"] < 0):
        raise bad("train_seconds", "a non-negative number")
    for key in ("recipe", "init_agreement_per_layer"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(key, "a mapping")
    per = manifest.get("init_agreement_per_layer") or {}
    for k, val in per.items():
        if val is not None and (not _is_num(val) or not 0 <= val <= 1):
            raise SourceError(f"{where}: field 'init_agreement_per_layer.{k}' must be a number in "
                              f"[0, 1], got {_kind(val)}")
    if "history" in manifest and not isinstance(manifest["history"], list):
        raise bad("history", "a list")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the source directory ``path``, its fields' types checked."""
    path = Path(path)
    m = path / MANIFEST
    if not path.is_dir():
        raise SourceError(f"source directory {path} does not exist (or is not a directory)")
    if not m.is_file():
        raise SourceError(f"{path} is not a source directory: it has no {MANIFEST}")
    try:
        manifest = json.loads(m.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise SourceError(f"{m} is not valid JSON ({e})") from None
    except OSError as e:
        raise SourceError(f"cannot read {m}: {e.strerror or e}") from None
    return check_manifest(manifest, m)


def verify_source_dir(path: str | Path, manifest: dict | None = None) -> dict[str, Any]:
    """Check both files against the manifest's sizes and sha256; returns the manifest.  (The
    contents, a template that is the weights' signs and finite weights, are checked by
    :func:`read_source_dir`.)"""
    path = Path(path)
    manifest = manifest or read_manifest(path)
    for f in (WEIGHTS, TEMPLATE):
        p = path / f
        want = manifest["files"][f]
        if not p.is_file():
            raise SourceError(f"source {path} lacks {f}")
        if p.stat().st_size != want["bytes"] or sha256_file(p) != want["sha256"]:
            raise SourceError(f"{p} does not match its manifest (size or sha256 differ): the file "
                              f"is corrupt or was replaced; regenerate it with: {manifest.get('command')}")
    return manifest


def check_contents(path: str | Path, state: dict[str, torch.Tensor], template: Template,
                   manifest: dict[str, Any]) -> None:
    """What the hashes cannot tell: the weights are finite and fit the manifest's architecture,
    and the template is exactly the signs of the weights (entries whose weight is 0 aside).
    Raise :class:`SourceError` with one line naming the file and the tensor."""
    from ..models import build_model

    path = Path(path)
    wp, tp = path / WEIGHTS, path / TEMPLATE
    for k, w in state.items():
        if w.is_floating_point() and not bool(torch.isfinite(w).all()):
            n = int((~torch.isfinite(w)).sum())
            raise SourceError(f"{wp}: tensor {k!r} has {n} non-finite values (NaN or infinite)")
    kwargs = {k: v for k, v in manifest["model"].items() if k != "num_classes"}
    try:
        model = build_model(manifest["arch"], len(manifest["classes"]), **kwargs)
    except (ValueError, TypeError) as e:
        raise SourceError(f"{path / MANIFEST}: fields 'arch'/'model' do not make a network ({e})") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise SourceError(f"{wp}: the weights do not fit the manifest's {manifest['arch']} "
                          f"{manifest['model']} (first difference: {diff[0]!r})")
    for k in template.keys():
        if k not in state:
            raise SourceError(f"{tp}: entry {k!r} has no weight in {WEIGHTS}")
        w, t = state[k], template[k]
        if tuple(t.shape) != tuple(w.shape):
            raise SourceError(f"{tp}: entry {k!r} has shape {tuple(t.shape)}, its weight {tuple(w.shape)}")
        s = torch.sign(w).to(torch.int8)
        wrong = int(((s != t) & (s != 0)).sum())
        if wrong:
            raise SourceError(f"{tp}: entry {k!r}: {wrong} of {t.numel()} signs differ from its "
                              f"weights' signs (the template is not the signs of {WEIGHTS})")
    expected = set(Template.from_module(state).keys())
    if set(template.keys()) != expected:
        missing = sorted(expected - set(template.keys()))
        raise SourceError(f"{tp}: the template lacks the weights {missing[:3]}" if missing else
                          f"{tp}: the template has entries that are not weights: "
                          f"{sorted(set(template.keys()) - expected)[:3]}")


def read_source_dir(path: str | Path, verify: bool = True) -> SourceNetwork:
    """Read (and by default verify: files against the manifest, then :func:`check_contents`) a
    source directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = verify_source_dir(path) if verify else read_manifest(path)
    try:
        state = load_file(path / WEIGHTS)
        template = Template.load(path / TEMPLATE)
    except (SafetensorError, TemplateError, OSError) as e:
        raise SourceError(f"source {path}: {e}") from None
    if verify:
        check_contents(path, state, template, manifest)
    return SourceNetwork(path, state, template, manifest)


__all__ = ["SourceError", "SourceNetwork", "write_source_dir", "read_source_dir", "read_manifest",
           "verify_source_dir", "check_manifest", "check_contents", "WEIGHTS", "TEMPLATE", "MANIFEST"]
