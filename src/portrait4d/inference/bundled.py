"""Where the bundled demo model and its sample inputs live inside the installed package.

``portrait4d/assets/bundled/`` holds ``psi/`` (a tiny-preset synthesizer checkpoint with
its learned E_mot nested as ``psi/motion_encoder/``), ``source.png`` (an aligned source
portrait) and ``driving/`` (a clip folder). Found through :mod:`importlib.resources`, so
it works from a wheel, an editable install or a source checkout alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from portrait4d.errors import UserInputError

BUNDLED_FOLDER = "assets/bundled"
"""Inside the ``portrait4d`` package."""


@dataclass(frozen=True)
class BundledPaths:
    checkpoint: Path
    source: Path
    driving: Path


def bundled_paths() -> BundledPaths:
    """The bundled checkpoint, source image and driving clip; UserInputError when not installed."""
    root = Path(str(resources.files("portrait4d"))) / BUNDLED_FOLDER
    paths = BundledPaths(root / "psi", root / "source.png", root / "driving")
    missing = [path.name for path in (paths.checkpoint, paths.source, paths.driving) if not path.exists()]
    if missing:
        raise UserInputError(
            f"the bundled demo model is not installed ({', '.join(missing)} missing under {root}); "
            "pass --checkpoint and inputs of your own"
        )
    return paths
