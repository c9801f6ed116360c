"""Sphinx configuration of nbstream's user guide and API reference.

Build (what ``tox -e docs`` runs)::

    sphinx-build -W -b html docs docs/_build/html

The guide's examples (``docs/examples/plot_*.py``) are executed by sphinx-gallery at every
build, on the CPU, with small sizes (the whole build takes about a minute or two).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import nbstream

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# bench/ (the faithful baseline of the default collector, used by the conversion example)
# is importable from the repository root, not from the installed package.
sys.path.insert(0, str(ROOT))

project = "nbstream"
author = "nbstream developers"
copyright = "nbstream developers"
release = nbstream.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "myst_parser",  # only for including the repository's BENCHMARKS.md
]

exclude_patterns = ["_build", "_generated", "examples", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
html_theme = "alabaster"
html_title = f"nbstream {release}"
html_static_path: list[str] = []

# -- API reference ---------------------------------------------------------------------------
autodoc_member_order = "bysource"
# Types in the signatures: the docstrings describe, they do not repeat the types.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False  # Lightning's hook docstrings are not ours to render
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False  # api.rst lists its entries by hand
napoleon_google_docstring = True  # retrieval.py and kernels.py use "Args:"
napoleon_numpy_docstring = True  # collector.py and experiment.py use "Parameters ----"
napoleon_use_rtype = False

# -- the guide (sphinx-gallery) --------------------------------------------------------------
# The examples share an exca cache in <tmp>/nbstream-guide, so that later pages reuse the
# experiments of earlier ones. Each build starts it empty: the pages show this build's runs.
shutil.rmtree(Path(tempfile.gettempdir()) / "nbstream-guide", ignore_errors=True)
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every example runs at build time
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    # A failing example fails the build (with -W), so the guide never shows stale output.
    "abort_on_example_error": True,
    # Re-run examples whose source did not change, too: they exercise the library, which may
    # have (sphinx-gallery otherwise skips an example whose checksum it has seen).
    "run_stale_examples": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}

# Lightning and torch say things while the examples train; they are not problems of the guide.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*litlogger.*")
warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
# matplotlib in a headless build
warnings.filterwarnings("ignore", message=r".*Matplotlib is currently using agg.*")


# -- the benchmark table ---------------------------------------------------------------------
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _rebase_link(match: re.Match[str]) -> str:
    """A relative link of BENCHMARKS.md, made valid from ``docs/_generated``."""
    bang, text, target = match.groups()
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return match.group(0)  # a URL, an anchor or an absolute path: as is
    if bang:  # an image: Sphinx resolves "/path" from the source folder (docs/)
        return f"![{text}](/../{target})"
    # a repository file (a JSON result, a script): no page to link to in the guide
    return f"{text} (`{target}`)" if text and text != target else f"`{target}`"


def _benchmarks_page() -> None:
    """Write ``_generated/benchmarks.md``: the repository's BENCHMARKS.md, or a placeholder.

    ``benchmarks.rst`` includes that file, so the build passes whether BENCHMARKS.md exists
    or not. Relative links are rewritten to resolve from the repository root.
    """
    out = DOCS / "_generated" / "benchmarks.md"
    out.parent.mkdir(exist_ok=True)
    source = ROOT / "BENCHMARKS.md"
    if source.exists():
        text = _LINK.sub(_rebase_link, source.read_text(encoding="utf-8"))
    else:
        text = (
            "*BENCHMARKS.md is not in this checkout yet.* Run the benchmarks (commands above) "
            "to get the table for your machine.\n"
        )
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


_benchmarks_page()
