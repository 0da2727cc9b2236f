"""`evalctl query --image FILE` on a segmentation model: POST /v1/segment, write the masks and overlays."""

from __future__ import annotations

import base64
from pathlib import Path

from rich.table import Table

from cluster.errors import UserError
from jobs.entry import console

SHOWN = 3  # classes listed per image, largest share first


def encoded_files(files: list[Path]) -> list[str]:
    """The image files base64-encoded, as POST /v1/segment takes them."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"--image: no such file: {', '.join(missing)}")
    return [base64.b64encode(f.read_bytes()).decode("ascii") for f in files]


def write_segmentations(files: list[Path], result: dict, as_json: bool, out: Path) -> list[dict]:
    """Write /v1/segment's answer for the image files: NAME.mask.png (the label map as served) and
    NAME.overlay.png (the image tinted by class) into ``out``; print each image's largest class shares."""
    from cluster.report.masks import image_rgb, overlay_png

    if as_json:
        console.print_json(data=result)
    labels = result["model"]["labels"]
    out.mkdir(parents=True, exist_ok=True)
    table = Table(
        "image",
        "size",
        "classes (share of pixels)",
        "mask",
        "overlay",
        title=f"model {result['model']['id']}",
    )
    written = []
    for f, seg in zip(files, result["segmentations"], strict=True):
        mask_png = base64.b64decode(seg["mask_png"])
        mask_file, overlay_file = out / f"{f.stem}.mask.png", out / f"{f.stem}.overlay.png"
        mask_file.write_bytes(mask_png)
        mask = _label_map(mask_png)
        overlay_file.write_bytes(overlay_png(image_rgb(f.read_bytes()), mask, labels))
        top = sorted(seg["shares"].items(), key=lambda kv: -kv[1])[:SHOWN]
        shares = ", ".join(f"{name} {share:.1%}" for name, share in top if share > 0)
        table.add_row(f.name, f"{seg['width']}x{seg['height']}", shares, str(mask_file), str(overlay_file))
        written.append({"mask": mask_file, "overlay": overlay_file})
    if not as_json:
        console.print(table)
    return written


def _label_map(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint8)  # mode P: the class ids
