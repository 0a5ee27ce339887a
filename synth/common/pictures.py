"""Pictures a person looks at: mask overlays, heat-map overlays and contact sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from .files import write_atomic
from .mask_windows import defect_window
from .png import encode_png


def mask_overlay(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40), fill: bool = True
) -> np.ndarray:
    """The image with the mask tinted in (soft masks by their value) and outlined; ``fill=False``
    draws the outline alone, leaving the defect itself visible."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    alpha = (0.45 if fill else 0.0) * np.clip(mask, 0, 1)[..., None]
    out = (rgb * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def heatmap_overlay(image: np.ndarray, scores: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Anomaly scores as a JET heat map blended over the image."""
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    scores = cv2.resize(scores.astype(np.float32), (rgb.shape[1], rgb.shape[0]))
    lo = float(scores.min()) if vmin is None else vmin
    hi = float(scores.max()) if vmax is None else vmax
    norm = np.clip((scores - lo) / max(hi - lo, 1e-12), 0, 1)
    heat = cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 0.55, heat, 0.45, 0)


def colour_bar(width: int, low: float, high: float, label: str = "anomaly score", height: int = 14) -> np.ndarray:
    """The heat-map colour scale as a strip (low on the left, high on the right) with its values written
    under it, to put under a sheet of heat maps drawn on that one scale."""
    ramp = np.linspace(0, 255, max(2, width - 8)).astype(np.uint8)[None].repeat(height, 0)
    strip = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    bar = np.full((height + 26, width, 3), 255, np.uint8)
    bar[4 : 4 + height, 4 : 4 + strip.shape[1]] = strip
    font, y = cv2.FONT_HERSHEY_SIMPLEX, height + 20
    cv2.putText(bar, f"{low:.3g}", (4, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    right = f"{high:.3g}"
    cv2.putText(bar, right, (width - 8 - 7 * len(right), y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, label, (max(4, width // 2 - 3 * len(label)), y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def captioned_heatmap(
    image: np.ndarray, scores: np.ndarray, caption: str, vmin: float, vmax: float, label: str = "anomaly map"
) -> np.ndarray:
    """One inspected image as a person reads it: a caption above, the image in its own colours beside
    its heat-map overlay, and the colour scale of the map below."""
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    heat = heatmap_overlay(rgb, scores, vmin=vmin, vmax=vmax)
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    pair = np.concatenate([rgb, gap, heat], axis=1)
    width = max(pair.shape[1], 240)  # room for the caption and the scale's numbers on small images
    scale = min(0.5, max(0.3, width / 900))
    lines = _wrap(caption, max(10, int(width / (scale * 19))))
    header = np.full((8 + 16 * len(lines), width, 3), 255, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(header, line, (4, 16 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    body = np.full((pair.shape[0], width, 3), 255, np.uint8)
    body[:, : pair.shape[1]] = pair
    return np.concatenate([header, body, colour_bar(width, vmin, vmax, label)], axis=0)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def fit_tile(image: np.ndarray, size: int) -> np.ndarray:
    """Letterbox an image into a size x size tile, keeping its aspect ratio."""
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    tile = np.full((size, size, 3), 32, np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    tile[y : y + nh, x : x + nw] = resized
    return tile


def contact_sheet(
    panels: Iterable[tuple[list[np.ndarray], str]], columns: int = 4, tile: int = 160, gap: int = 4
) -> np.ndarray:
    """Grid of captioned cells; each cell is a row of images (e.g. anomalous image and mask overlay)."""
    cells = []
    for images, caption in panels:
        row = np.concatenate([fit_tile(im, tile) for im in images], axis=1)
        header = np.full((18, row.shape[1], 3), 16, np.uint8)
        cv2.putText(header, caption[: row.shape[1] // 7], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1, cv2.LINE_AA)
        cells.append(np.concatenate([header, row], axis=0))
    if not cells:
        raise ValueError("nothing to put on the contact sheet")
    ch, cw = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
    rows = (len(cells) + columns - 1) // columns
    sheet = np.full((rows * (ch + gap) + gap, min(columns, len(cells)) * (cw + gap) + gap, 3), 255, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, columns)
        y, x = gap + r * (ch + gap), gap + c * (cw + gap)
        sheet[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return sheet


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) image as PNG atomically."""
    path = Path(path)
    try:
        data = encode_png(rgb)
    except ValueError as error:
        raise ValueError(f"could not encode {path}: {error}") from None
    write_atomic(path, data)
    return path


def close_up(image: np.ndarray, mask: np.ndarray, context: float = 1.5, min_size: int = 48) -> list[np.ndarray]:
    """A window around a defect, plain and with its mask overlaid: small defects stay visible."""
    y0, y1, x0, x1 = defect_window(mask > 0, context=context, min_size=min_size)
    return [image[y0:y1, x0:x1], mask_overlay(image[y0:y1, x0:x1], mask[y0:y1, x0:x1])]


def shots_sheet(shots: Iterable, samples: Iterable, per_defect: int = 3, tile: int = 128) -> np.ndarray:
    """Per defect type, its real shots next to up to ``per_defect`` generated samples (close-ups)."""
    shots, samples = list(shots), list(samples)
    panels = []
    for defect in dict.fromkeys(shot.defect for shot in shots):
        panels += [(close_up(s.image, s.mask), f"real {defect}") for s in shots if s.defect == defect]
        made = [s for s in samples if s.params.get("defect") == defect][:per_defect]
        panels += [(close_up(s.image, s.mask), f"generated {defect}") for s in made]
    columns = max(1, max(sum(1 for s in shots if s.defect == d) for d in {s.defect for s in shots}) + per_defect)
    return contact_sheet(panels, columns=columns, tile=tile)
