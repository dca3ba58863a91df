"""Sphinx configuration of the skvif documentation.

Build (warnings are errors, the gallery is executed)::

    python -m sphinx -W --keep-going -b html doc doc/_build/html

No network access is needed: intersphinx is not used.
"""

import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

sys.path.insert(0, os.path.abspath(".."))  # the checkout, when skvif is not installed
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _gallery_order

import skvif  # noqa: E402

project = "skvif"
author = "the skvif developers"
copyright = "the skvif developers, BSD-3-Clause"
version = release = skvif.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "**/*.codeobj.json"]
root_doc = "index"
default_role = "code"

# -- API reference ---------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {}
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Every documented object is validated; a failing check is a Sphinx warning, so
# a build with -W fails on it. Left out: checks that would demand prose the
# reference does not need (extended summaries, See Also and Examples on every
# method, descriptions of self-explanatory returns).
numpydoc_validation_checks = {
    "all",
    "GL01", "GL02",  # summary on the first/second line: both styles are fine
    "ES01",          # no extended summary
    "SA01",          # no See Also
    "EX01",          # no Examples (required on classes and functions by review)
    "RT02",          # return type given without a name
    "RT03",          # return value without description
    "PR07",          # parameter without description (documented by its type)
    "SS05",          # summary in the infinitive
}
numpydoc_validation_exclude = {
    r"\.get_params$", r"\.set_params$", r"\.set_\w+_request$", r"\.get_metadata_routing$",
    r"\.__init__$",
}

# -- gallery -----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "doc_module": ("skvif",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"skvif": None},
    "remove_config_comments": True,
    "plot_gallery": "True",
    "download_all_examples": False,
    "matplotlib_animations": False,
    "show_memory": False,
    "min_reported_time": 1,
    "within_subsection_order": "_gallery_order.ExampleOrder",
}
# lifelines and autograd emit deprecation noise that is not ours to fix
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="lifelines")

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skvif {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"index": []}
mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}"}}}
