"""An Omniglot-like set of characters rendered from the DejaVu fonts matplotlib ships.

Scripts (``coarse_label``) are Unicode blocks DejaVu covers — Latin, Greek,
Cyrillic, Armenian, Hebrew, Georgian, Arabic, Tifinagh, N'Ko, Canadian
syllabics, Ogham, Braille, Old Italic, Lao, then symbol sets — and each
character of a script is a class (``label``). Lookalikes across scripts are
left out (Greek omicron, the Cyrillic capitals shaped like Latin ones, …).

Every image is one "drawing" of its character: a random DejaVu face among
those that have the glyph (Sans / Serif / Mono × regular, bold, oblique), a
random stroke width (erode / dilate), random gaps in the strokes, a smooth
elastic warp, a random affine map (rotation ±12°, anisotropic scale, shear,
shift), random ink intensity and pixel noise. White strokes on black, like
MNIST (``glyphs`` is the OOD set of the MNIST experiment of Khrulkov et al.,
CVPR 2020, where Omniglot played that role).

Splits follow Omniglot's few-shot protocol (Lake et al. 2015) but split by
character rather than alphabet, so every script keeps seen characters:
per script ``novel_per_script`` seeded-random characters are ``novel`` (all
their images); of the other characters' images, ``test_per_character`` per
character are ``test`` and the rest ``train``.

Deterministic: one config gives the same bytes on one platform and library
stack (the glyph outlines come from the installed DejaVu fonts). Generated
once per config and cached (:func:`harness.data.cached_tensors`).

Annotation ``typicality`` (float32 in [0, 1], 1 = most typical): how little the
drawing departs from the plain glyph. Eight atypicalities, each the drawn
strength divided by its largest possible value (so in [0, 1]): rotation
``|θ| / 12°``; shear ``|s| / 0.25``; scale ``(|s_x − 0.95| + |s_y − 0.95|) / 0.3``
(distance from the middle of [0.8, 1.1]); shift ``‖t‖ / (0.1 √2)``; elastic warp
amplitude ``/ 0.05``; stroke gaps ``(3.0 − threshold) / 2.1`` (a lower threshold
on the smooth field cuts more of the strokes); stroke width ``|w − 1| / 2`` over the
widths eroded (0), as drawn (1), dilated once (2) and twice (3); ink
``(1 − intensity) / 0.3``. ``typicality = 1 − mean of the eight`` (equal weights).
The face (Sans / Serif / Mono, bold, oblique) is left out: it is style, not a
strength, and the pixel noise has one strength for every image. The images are
the bytes of version 1; version 2 adds the annotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError
from harness.plugins.datasets._render import affine_grid, smooth_field, to_uint8, uniform


def _span(first: int, last: int, step: int = 1, skip: tuple[int, ...] = ()) -> list[int]:
    return [cp for cp in range(first, last + 1, step) if cp not in skip]


#: (script name, code points), in the order ``n_scripts`` takes them.
SCRIPTS: list[tuple[str, list[int]]] = [
    ("Latin", _span(0x41, 0x5A)),
    ("Greek", _span(0x3B1, 0x3C9, skip=(0x3BF,))),  # lower case; omicron looks like Latin O
    ("Cyrillic", [ord(c) for c in "БГДЖЗИЙЛПУФЦЧШЩЪЫЬЭЮЯЂЉЊЋЏҐЄ"]),  # no Latin lookalikes
    ("Armenian", _span(0x531, 0x556, skip=(0x54D, 0x555))),  # Ս and Օ look like U and O
    ("Hebrew", _span(0x5D0, 0x5EA)),
    ("Georgian", _span(0x10D0, 0x10F0)),
    ("Arabic", [ord(c) for c in "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"]),
    ("Tifinagh", _span(0x2D30, 0x2D65, step=2)),
    ("NKo", _span(0x7CA, 0x7EA)),
    ("Canadian_Syllabics", [0x1401, 0x1403, 0x1405, 0x140A, 0x142F, 0x1431, 0x1433, 0x1438, 0x144C, 0x144E,
                            0x1450, 0x1455, 0x146B, 0x146D, 0x146F, 0x1472, 0x1489, 0x148B, 0x148D, 0x1490,
                            0x14A3, 0x14A5, 0x14A7, 0x14AA, 0x14C0, 0x14C2, 0x14C4, 0x14C7, 0x14ED, 0x14EF,
                            0x14F1, 0x14F4]),
    ("Ogham", _span(0x1681, 0x169A)),
    ("Braille", [0x2800 + k for k in range(1, 64) if bin(k).count("1") >= 3]),
    ("Old_Italic", _span(0x10300, 0x1031E)),
    ("Lao", _span(0xE81, 0xEAE)),
    ("Yijing", _span(0x4DC0, 0x4DFF)),
    ("Math", [ord(c) for c in "∀∂∃∅∇∈∉∋∏∑√∝∞∠∧∨∩∪∫∮∴∵≈≠≡≤≥⊂⊃⊆⊇⊕⊗⊥⋂⋃"]),
    ("Arrows", _span(0x2190, 0x21FF, step=3)),
    ("Geometric", _span(0x25A0, 0x25FF, step=2)),
    ("Dingbats", _span(0x2701, 0x27BF, step=3)),
]

FACES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
         "DejaVuSansMono-BoldOblique.ttf"]

_TEMPLATE = 64  # side of the high-resolution glyph templates, in pixels
_GLYPH_BOX = 44  # the glyph's longer side inside a template (margin for rotation and warps)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=1)
def font_coverage() -> dict[str, frozenset[int]]:
    """Code points each DejaVu face maps to a glyph (from its ``cmap`` table)."""
    from fontTools.ttLib import TTFont

    out = {}
    for face in FACES:
        with TTFont(font_dir() / face, lazy=True) as font:
            out[face] = frozenset(font["cmap"].getBestCmap())
    return out


def available_scripts() -> list[tuple[str, list[int]]]:
    """:data:`SCRIPTS` restricted to the code points the installed regular DejaVu Sans draws."""
    sans = font_coverage()["DejaVuSans.ttf"]
    return [(name, [cp for cp in cps if cp in sans]) for name, cps in SCRIPTS]


def render_template(char: str, face: str) -> np.ndarray:
    """The glyph of ``char`` in ``face`` in four stroke widths: float32 (4, 64, 64) in [0, 1].

    The glyph's longer side is 44 px, centred; the widths are eroded once (3×3
    min filter), as drawn, dilated once and twice (3×3 max filter).
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(font_dir() / face), size=96)
    canvas = Image.new("L", (192, 192), 0)
    ImageDraw.Draw(canvas).text((96, 96), char, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{face} draws nothing for U+{ord(char):04X}")
    glyph = canvas.crop(box)
    w, h = glyph.size
    k = _GLYPH_BOX / max(w, h)
    glyph = glyph.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS)
    out = Image.new("L", (_TEMPLATE, _TEMPLATE), 0)
    out.paste(glyph, ((_TEMPLATE - glyph.size[0]) // 2, (_TEMPLATE - glyph.size[1]) // 2))
    thick = out.filter(ImageFilter.MaxFilter(3))
    variants = [out.filter(ImageFilter.MinFilter(3)), out, thick, thick.filter(ImageFilter.MaxFilter(3))]
    return np.stack([np.asarray(v, dtype=np.float32) for v in variants]) / 255.0


class Glyphs(ImageDataset):
    """Rendered characters of many scripts: ``label`` = character, ``coarse_label`` = script."""

    VERSION = "2"

    @dataclass
    class Config:
        name: str = "glyphs"
        n_scripts: int = 14
        characters_per_script: int = 16
        samples_per_character: int = 20
        novel_per_script: int = 4
        test_per_character: int = 5
        image_size: int = 32
        noise: float = 0.06  # pixel noise std, in [0, 1] intensity units
        seed: int = 0

        def validate(self) -> None:
            scripts = available_scripts()
            if not 1 <= self.n_scripts <= len(scripts):
                raise ConfigError(f"glyphs: n_scripts must be in 1..{len(scripts)}, got {self.n_scripts}")
            fewest = min(len(cps) for _, cps in scripts[: self.n_scripts])
            if not 1 <= self.characters_per_script <= fewest:
                raise ConfigError(f"glyphs: characters_per_script must be in 1..{fewest} for {self.n_scripts} scripts "
                                  f"(the smallest of them has {fewest}), got {self.characters_per_script}")
            if not 0 <= self.novel_per_script < self.characters_per_script:
                raise ConfigError("glyphs: need 0 <= novel_per_script < characters_per_script, got "
                                  f"{self.novel_per_script} and {self.characters_per_script}")
            if not 0 <= self.test_per_character < self.samples_per_character:
                raise ConfigError("glyphs: need 0 <= test_per_character < samples_per_character, got "
                                  f"{self.test_per_character} and {self.samples_per_character}")
            if self.image_size < 8:
                raise ConfigError(f"glyphs: image_size must be at least 8, got {self.image_size}")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        scripts = available_scripts()[: c.n_scripts]
        chars = [cps[: c.characters_per_script] for _, cps in scripts]
        data = cached_tensors("datasets", f"glyphs-{self.fingerprint()}", lambda: self._generate(chars))
        self._images = data["images"]
        label = data["label"].numpy()
        coarse = label // c.characters_per_script
        self.annotations = {"label": label, "coarse_label": coarse, "typicality": data["typicality"].numpy()}
        self.splits = self._make_splits(label)
        self.info = DatasetInfo(
            image_size=(c.image_size, c.image_size), channels=1,
            class_names=[f"{name}/{chr(cp)} (U+{cp:04X})" for (name, _), cps in zip(scripts, chars, strict=True)
                         for cp in cps],
            coarse_names=[name for name, _ in scripts],
            license="generated (MIT, part of the harness); DejaVu fonts: Bitstream Vera license",
            citation="Omniglot protocol: B. M. Lake et al., Science 2015.")

    def _make_splits(self, label: np.ndarray) -> dict[str, np.ndarray]:
        c = self.cfg
        rng = np.random.default_rng(c.seed)
        novel_chars = np.concatenate([
            s * c.characters_per_script + rng.permutation(c.characters_per_script)[: c.novel_per_script]
            for s in range(c.n_scripts)])
        is_novel = np.isin(label, novel_chars)
        within = np.arange(len(label)) % c.samples_per_character  # images are generated character by character
        is_test = ~is_novel & (within >= c.samples_per_character - c.test_per_character)
        return {"train": np.flatnonzero(~is_novel & ~is_test), "test": np.flatnonzero(is_test),
                "novel": np.flatnonzero(is_novel)}

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        return self._images[torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))]

    def _generate(self, chars: list[list[int]]) -> dict[str, torch.Tensor]:
        c = self.cfg
        gen = torch.Generator().manual_seed(c.seed)
        coverage = font_coverage()
        flat = [cp for cps in chars for cp in cps]
        # One template per (character, face that has it), in four stroke widths.
        templates, first, count = [], [], []
        for cp in flat:
            faces = [f for f in FACES if cp in coverage[f]]
            first.append(len(templates))
            count.append(len(faces))
            templates += [render_template(chr(cp), f) for f in faces]
        bank = torch.from_numpy(np.stack(templates)).transpose(0, 1).reshape(-1, 1, _TEMPLATE, _TEMPLATE)
        n_char, per = len(flat), c.samples_per_character
        label = torch.arange(n_char).repeat_interleave(per)
        n = len(label)
        pick = (torch.rand(n, generator=gen) * torch.tensor(count)[label]).long()
        width = torch.multinomial(torch.tensor([0.25, 0.35, 0.3, 0.1]), n, replacement=True, generator=gen)
        x = bank[width * len(templates) + torch.tensor(first)[label] + pick]
        # Gaps in the strokes where a smooth random field is high (none for about a third of the drawings).
        gaps = smooth_field(gen, n, 1, 10, (_TEMPLATE, _TEMPLATE))
        gap_threshold = uniform(gen, n, 0.9, 3.0)
        x = x * (gaps < gap_threshold[:, None, None, None])

        # Affine map + smooth elastic warp, sampled at twice the output size, then box-filtered down.
        # (The draws keep version 1's order, so the images are the same bytes.)
        size = c.image_size
        hi = (2 * size, 2 * size)
        rot, scale_x, scale_y = uniform(gen, n, -12, 12), uniform(gen, n, 0.8, 1.1), uniform(gen, n, 0.8, 1.1)
        shear, shift = uniform(gen, n, -0.25, 0.25), uniform(gen, (n, 2), -0.1, 0.1)
        grid = affine_grid(rot=rot * math.pi / 180, scale_x=scale_x, scale_y=scale_y, shear=shear, shift=shift,
                           out_hw=hi)
        field = smooth_field(gen, n, 2, 4, hi).permute(0, 2, 3, 1)
        warp_amp = uniform(gen, n, 0.0, 0.05)
        x = F.grid_sample(x, grid + field * warp_amp[:, None, None, None], mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        x = F.avg_pool2d(x, 2)
        ink = uniform(gen, n, 0.7, 1.0)
        x = x * ink[:, None, None, None] + c.noise * torch.randn(x.shape, generator=gen)
        typicality = drawing_typicality(rot, shear, scale_x, scale_y, shift, warp_amp, gap_threshold, width, ink)
        return {"images": to_uint8(x), "label": label, "typicality": typicality}


def drawing_typicality(rot: torch.Tensor, shear: torch.Tensor, scale_x: torch.Tensor, scale_y: torch.Tensor,
                       shift: torch.Tensor, warp: torch.Tensor, gap_threshold: torch.Tensor, width: torch.Tensor,
                       ink: torch.Tensor) -> torch.Tensor:
    """Typicality in [0, 1] (1 = most typical) of drawings from their drawn strengths (module docstring).

    ``rot`` in degrees (±12), ``shear`` ±0.25, ``scale_*`` in [0.8, 1.1], ``shift`` ``(n, 2)`` in ±0.1,
    ``warp`` amplitude in [0, 0.05], ``gap_threshold`` in [0.9, 3.0], ``width`` index 0..3 (1 = as
    drawn), ``ink`` in [0.7, 1.0].
    """
    atypical = torch.stack([
        rot.abs() / 12, shear.abs() / 0.25, ((scale_x - 0.95).abs() + (scale_y - 0.95).abs()) / 0.3,
        torch.linalg.vector_norm(shift, dim=1) / (0.1 * math.sqrt(2)), warp / 0.05,
        (3.0 - gap_threshold) / 2.1, (width.float() - 1).abs() / 2, (1.0 - ink) / 0.3,
    ], 1).clamp(0, 1)
    return (1 - atypical.mean(1)).to(torch.float32)
