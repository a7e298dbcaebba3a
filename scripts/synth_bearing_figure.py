"""Draw docs/images/synth-bearing.png: a 'bearing' synthetic slide and the class of every cell.

    python scripts/synth_bearing_figure.py [OUT.png]
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import ndimage  # noqa: E402

from napari_muvit.data.synthetic import class_colors, class_names, synthetic_slide  # noqa: E402


def main(out: str = "docs/images/synth-bearing.png") -> None:
    image, labels, _ = synthetic_slide(1024, seed=1, kind="bearing")
    colors = np.asarray(class_colors("bearing"), float) / 255
    names = class_names(kind="bearing")
    fig, ax = plt.subplots(1, 2, figsize=(10, 5.4))
    ax[0].imshow(image, cmap="gray")
    ax[0].set_title("image: identical cells, identical landmarks")
    ax[1].imshow(image, cmap="gray")
    # label value k + 1 = class k; cells enlarged to be seen at this size
    ax[1].imshow(colors[ndimage.grey_dilation(labels, size=7) - 1])
    ax[1].set_title("class = side of the nearest landmark")
    ax[1].legend(handles=[Patch(color=colors[k], label=names[k]) for k in range(1, len(names))],
                 loc="lower center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8, frameon=False)
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:])
