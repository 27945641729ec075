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
import platform
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
    from safetensors.torch import save_file

    from .._version import __version__

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SourceError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
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


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    m = path / MANIFEST
    if not path.is_dir():
        raise SourceError(f"source directory {path} does not exist (or is not a directory)")
    if not m.is_file():
        raise SourceError(f"{path} is not a source directory: it has no {MANIFEST}")
    try:
        manifest = json.loads(m.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"{m} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SourceError(f"{m} is not a polarity source manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise SourceError(f"{m} has format version {manifest.get('format_version')}; this "
                          f"polarity reads up to {FORMAT_VERSION}: upgrade polarity")
    for key in ("dataset", "dataset_label", "arch", "model", "files", "classes"):
        if key not in manifest:
            raise SourceError(f"{m} lacks the field {key!r}")
    return manifest


def verify_source_dir(path: str | Path, manifest: dict | None = None) -> dict[str, Any]:
    """Check both files against the manifest's sizes and sha256; returns the manifest."""
    path = Path(path)
    manifest = manifest or read_manifest(path)
    for f in (WEIGHTS, TEMPLATE):
        p = path / f
        want = manifest["files"].get(f)
        if want is None:
            raise SourceError(f"{path / MANIFEST} lists no {f}")
        if not p.is_file():
            raise SourceError(f"source {path} lacks {f}")
        if p.stat().st_size != want["bytes"] or sha256_file(p) != want["sha256"]:
            raise SourceError(f"{p} does not match its manifest (size or sha256 differ): the file "
                              f"is corrupt or was replaced; regenerate it with: {manifest.get('command')}")
    return manifest


def read_source_dir(path: str | Path, verify: bool = True) -> SourceNetwork:
    """Read (and by default verify) a source directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = verify_source_dir(path) if verify else read_manifest(path)
    try:
        state = load_file(path / WEIGHTS)
        template = Template.load(path / TEMPLATE)
    except (SafetensorError, TemplateError, OSError) as e:
        raise SourceError(f"source {path}: {e}") from None
    return SourceNetwork(path, state, template, manifest)


__all__ = ["SourceError", "SourceNetwork", "write_source_dir", "read_source_dir", "read_manifest",
           "verify_source_dir", "WEIGHTS", "TEMPLATE", "MANIFEST"]
