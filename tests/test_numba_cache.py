"""numba's on-disk cache is keyed on every kernel file of the package (polarity._numba)."""
import shutil

import pytest

from polarity import _numba

pytestmark = pytest.mark.skipif(not _numba.NUMBA, reason="numba not installed")


def test_cached_kernels_are_stamped_with_every_kernel_file():
    from polarity import seeds
    from polarity.freeze import numba_reset

    for kernel in (numba_reset.reset_range, seeds.mix32):
        cache = kernel._cache
        assert isinstance(cache._impl.locator, (_numba.PackageInTreeLocator,
                                                _numba.PackageUserWideLocator,
                                                _numba.PackageUserProvidedLocator))
        assert cache._cache_file._source_stamp == _numba.kernel_stamp()
    names = {str(p.relative_to(_numba.PACKAGE)) for p in _numba.kernel_files()}
    assert {"freeze/stream.py", "freeze/numba_reset.py", "_numba.py", "seeds.py",
            "experiments/xor5d/kernels.py"} <= names
    assert "freeze/freezer.py" not in names            # mentions numba, defines no kernel


def test_an_edit_to_any_kernel_file_changes_the_stamp(tmp_path, monkeypatch):
    pkg = tmp_path / "polarity"
    shutil.copytree(_numba.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_numba, "PACKAGE", pkg)
    before = _numba.kernel_stamp()
    # an edit to the file a kernel inlines from, not to the kernel's own file
    f = pkg / "freeze" / "stream.py"
    f.write_text(f.read_text().replace("GOLDEN, FMIX1", "GOLDEN,  FMIX1"))
    assert _numba.kernel_stamp() != before
    # a file without numba does not take part
    after = _numba.kernel_stamp()
    (pkg / "files.py").write_text((pkg / "files.py").read_text() + "\n# edited\n")
    assert _numba.kernel_stamp() == after


def test_the_locator_declines_functions_outside_the_package(tmp_path):
    f = tmp_path / "user_kernels.py"
    f.write_text("def k(x):\n    return x\n")
    ns = {}
    exec(compile(f.read_text(), str(f), "exec"), ns)
    assert _numba.PackageInTreeLocator.from_function(ns["k"], str(f)) is None
