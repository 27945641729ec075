"""numba, when installed: the import, bit-cast intrinsics, and a cache keyed on every kernel file.

numba's on-disk cache keys a function on its own source file only, but our kernels inline
functions from other files (the reset rule, the posRand stream).  The locator below keys every
cached kernel of this package on a hash of *all* the package's numba source files, so an edit to
any of them invalidates every cached kernel (docs/kernels.md).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import caching
    from numba.extending import intrinsic

    NUMBA = True
except ImportError:  # pragma: no cover
    NUMBA = False

PACKAGE = Path(__file__).resolve().parent


_DEFINES_KERNEL = re.compile(r"^\s*@(?:\w+\.)*(?:njit|jit|intrinsic)\b", re.M)


def kernel_files() -> list[Path]:
    """The package's source files that define numba kernels or intrinsics (what a cached kernel
    may inline); files that only mention numba do not count."""
    return sorted(p for p in PACKAGE.rglob("*.py") if _DEFINES_KERNEL.search(p.read_text(errors="ignore")))


def kernel_stamp() -> str:
    """A hash of the contents of every kernel file: the freshness stamp of every cached kernel."""
    h = hashlib.sha256()
    for p in kernel_files():
        h.update(str(p.relative_to(PACKAGE)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


if NUMBA:

    class _PackageLocatorMixin:
        """Serve only this package's files; stamp them with :func:`kernel_stamp`."""

        _stamp: str | None = None

        def get_source_stamp(self):
            if _PackageLocatorMixin._stamp is None:
                _PackageLocatorMixin._stamp = kernel_stamp()
            return _PackageLocatorMixin._stamp

        @classmethod
        def from_function(cls, py_func, py_file):
            try:
                Path(py_file).resolve().relative_to(PACKAGE)
            except ValueError:
                return None
            return super().from_function(py_func, py_file)

    class PackageInTreeLocator(_PackageLocatorMixin, caching.InTreeCacheLocator):
        pass

    class PackageUserWideLocator(_PackageLocatorMixin, caching.UserWideCacheLocator):
        pass

    class PackageUserProvidedLocator(_PackageLocatorMixin, caching.UserProvidedCacheLocator):
        pass

    # first in numba's list, in numba's own order (NUMBA_CACHE_DIR, __pycache__, user-wide);
    # they decline every function outside this package, which numba's locators then serve
    for _cls in (PackageUserWideLocator, PackageInTreeLocator, PackageUserProvidedLocator):
        if _cls not in caching.CacheImpl._locator_classes:
            caching.CacheImpl._locator_classes.insert(0, _cls)

    def _bitcast_codegen(width, float_type):
        def codegen(context, builder, signature, args):
            v, iw = args[0], ir.IntType(width)
            if v.type.width > width:
                v = builder.trunc(v, iw)
            elif v.type.width < width:
                v = builder.sext(v, iw)
            return builder.bitcast(v, float_type)

        return codegen

    @intrinsic
    def f32_from_bits(typingctx, bits):
        """The float32 whose IEEE bits are the low 32 bits of the integer ``bits`` (numba has no
        scalar bit cast); e.g. ``f32_from_bits((k + 127) << 23)`` is 2**k, branch-free."""
        if not isinstance(bits, types.Integer):
            return None
        return types.float32(bits), _bitcast_codegen(32, ir.FloatType())

    @intrinsic
    def f64_from_bits(typingctx, bits):
        """The float64 whose IEEE bits are the integer ``bits``: ``f64_from_bits((k + 1023) << 52)``
        is 2**k."""
        if not isinstance(bits, types.Integer):
            return None
        return types.float64(bits), _bitcast_codegen(64, ir.DoubleType())

# POLARITY_NO_NUMBA=1 sends the freezer down the torch path (the kernels stay importable)
AVAILABLE = NUMBA and os.environ.get("POLARITY_NO_NUMBA", "") == ""

__all__ = ["AVAILABLE", "NUMBA", "kernel_files", "kernel_stamp"]
