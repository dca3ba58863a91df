"""Order of the gallery: the stories first, the accuracy benchmark last.

Used by ``sphinx_gallery_conf["within_subsection_order"]`` in ``conf.py``
(given by name so that the configuration stays picklable). Examples not
listed here follow, by file name.
"""

import os

ORDER = [
    "plot_cox_rossi_audit.py",
    "plot_cox_survival_curves.py",
    "plot_ranking.py",
    "plot_label_ranking.py",
    "plot_karate_embedding.py",
    "plot_custom_loss.py",
    "plot_accuracy_speed.py",
]


class ExampleOrder:
    """Sort key: position in ``ORDER``, then the file name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(filename)
        return (ORDER.index(name) if name in ORDER else len(ORDER), name)

    def __repr__(self):
        return f"<{self.__class__.__name__}>"
