"""The root command line: mounting every stage must stay cheap (no torch, transformers or scikit-learn), so that
`quirky --help` answers at once; the heavy libraries load inside the commands that need them."""

from __future__ import annotations

import subprocess
import sys


def test_mounting_the_cli_imports_no_heavy_library():
    code = (
        "import sys, quirky.cli as c; c._mount(); "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'peft', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_package_attributes_resolve_and_unknown_names_fail():
    import pytest

    import quirky.models
    import quirky.probes
    from quirky.probes.registry import PROBES

    assert tuple(PROBES) == quirky.probes.METHODS
    assert callable(quirky.models.load_model)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = quirky.probes.nope
