"""Generated person re-identification in the Market-1501 protocol (Zheng et al., ICCV 2015).

An identity is a figure with fixed attributes: skin and hair tone, hair length,
shirt colours and pattern (plain, stripes, two-tone, chest logo), sleeves,
trouser colour and length, shoes, a backpack or handbag or none, build. A
camera is a fixed family of nuisances: its mix of front / back / side views,
colour gains and gamma, blur, noise, background colours and horizon, framing.
Per image: walking pose, position and scale jitter, a mirror flip, background
clutter, sometimes an occluder across the lower body. A back view hides the
face and the logo and shows the backpack, so appearance changes with the
camera, as in real re-ID.

Protocol (as Market-1501): ``train`` identities are disjoint from the test
identities; each identity appears in ``min_cameras``..``n_cameras`` cameras,
``images_per_camera`` images each; for every test identity one image per
camera it appears in is a ``query``, the rest ``gallery``; ``n_distractors``
images of one-off people join the gallery (each its own pid, never a query).
Annotations: ``pid`` (train pids 0.., then test, then distractors),
``camid``, ``is_query`` and ``label`` = ``pid``. ``novel`` = query ∪ gallery
without the distractors.

Deterministic per config; generated once and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import image_hw
from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError
from harness.plugins.datasets._render import gaussian_blur, hsv_to_rgb, smooth_field, to_uint8, uniform

_SKIN = torch.tensor([[0.96, 0.80, 0.69], [0.88, 0.67, 0.52], [0.76, 0.54, 0.38], [0.55, 0.37, 0.25],
                      [0.36, 0.24, 0.16]])
_HAIR = torch.tensor([[0.08, 0.07, 0.06], [0.30, 0.18, 0.10], [0.85, 0.72, 0.40], [0.60, 0.25, 0.10],
                      [0.60, 0.60, 0.60], [0.92, 0.92, 0.90]])
_PANTS = torch.tensor([[0.10, 0.12, 0.25], [0.08, 0.08, 0.08], [0.40, 0.40, 0.42], [0.70, 0.62, 0.45],
                       [0.25, 0.35, 0.60]])
FRONT, BACK, SIDE = 0, 1, 2


def _rect(u: torch.Tensor, v: torch.Tensor, u0, u1, v0, v1) -> torch.Tensor:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _col(x: torch.Tensor) -> torch.Tensor:
    """Per-image scalars (n,) → (n, 1, 1) for broadcasting over the canvas."""
    return x[:, None, None]


class ReidSynthetic(ImageDataset):
    """Generated pedestrians seen by several cameras (Market-1501 query / gallery protocol)."""

    VERSION = "1"

    @dataclass
    class Config:
        name: str = "reid_synthetic"
        train_identities: int = 100
        test_identities: int = 100
        n_cameras: int = 6
        min_cameras: int = 2
        images_per_camera: int = 3
        n_distractors: int = 100
        image_size: tuple[int, int] = (32, 16)  # (H, W), Market's 2:1 aspect
        seed: int = 0

        def validate(self) -> None:
            if not 2 <= self.min_cameras <= self.n_cameras:
                raise ConfigError(f"reid_synthetic: need 2 <= min_cameras <= n_cameras (a query needs a match in "
                                  f"another camera), got {self.min_cameras} and {self.n_cameras}")
            if self.train_identities < 1 or self.test_identities < 1 or self.n_distractors < 0:
                raise ConfigError("reid_synthetic: train_identities and test_identities must be >= 1 and "
                                  "n_distractors >= 0")
            if self.images_per_camera < 2:
                raise ConfigError("reid_synthetic: images_per_camera must be >= 2 (one per camera is the query, "
                                  f"the others are its gallery matches), got {self.images_per_camera}")
            if min(image_hw(self.image_size)) < 8:
                raise ConfigError(f"reid_synthetic: image_size must be at least 8×8, got {self.image_size}")

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        self._hw = image_hw(c.image_size)
        data = cached_tensors("datasets", f"reid_synthetic-{self.fingerprint()}", self._generate)
        self._images = data["images"]
        pid, camid = data["pid"].numpy(), data["camid"].numpy()
        is_query = data["is_query"].numpy().astype(bool)
        n_ids = c.train_identities + c.test_identities
        is_train = pid < c.train_identities
        self.annotations = {"label": pid.copy(), "pid": pid, "camid": camid, "is_query": is_query}
        gallery = ~is_train & ~is_query
        self.splits = {"train": np.flatnonzero(is_train), "query": np.flatnonzero(is_query),
                       "gallery": np.flatnonzero(gallery),
                       "novel": np.flatnonzero(~is_train & (pid < n_ids))}
        self.info = DatasetInfo(image_size=self._hw, channels=3, license="generated (MIT, part of the harness)",
                                citation="Protocol: L. Zheng et al., Scalable person re-identification: "
                                         "a benchmark. ICCV 2015.")

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        return self._images[torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))]

    # -- generation -----------------------------------------------------------------
    def _layout(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which (pid, camera) each image shows, and which are queries."""
        c = self.cfg
        pid, cam, query = [], [], []
        for p in range(c.train_identities + c.test_identities):
            k = int(rng.integers(c.min_cameras, c.n_cameras + 1))
            for cam_id in np.sort(rng.choice(c.n_cameras, size=k, replace=False)):
                for j in range(c.images_per_camera):
                    pid.append(p)
                    cam.append(int(cam_id))
                    query.append(p >= c.train_identities and j == 0)
        first_distractor = c.train_identities + c.test_identities
        for d in range(c.n_distractors):
            pid.append(first_distractor + d)
            cam.append(int(rng.integers(c.n_cameras)))
            query.append(False)
        return np.array(pid), np.array(cam), np.array(query)

    def _generate(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        rng = np.random.default_rng(c.seed)
        gen = torch.Generator().manual_seed(c.seed)
        pid_np, cam_np, query_np = self._layout(rng)
        pid, cam = torch.from_numpy(pid_np), torch.from_numpy(cam_np)
        n_people = int(pid.max()) + 1

        # Identity attributes.
        ident = {
            "skin": _SKIN[torch.randint(len(_SKIN), (n_people,), generator=gen)],
            "hair": _HAIR[torch.randint(len(_HAIR), (n_people,), generator=gen)],
            "long_hair": torch.rand(n_people, generator=gen) < 0.35,
            "shirt": hsv_to_rgb(torch.rand(n_people, generator=gen), uniform(gen, n_people, 0.25, 1.0),
                                uniform(gen, n_people, 0.3, 1.0)),
            "shirt2": hsv_to_rgb(torch.rand(n_people, generator=gen), uniform(gen, n_people, 0.0, 1.0),
                                 uniform(gen, n_people, 0.2, 1.0)),
            "pattern": torch.randint(4, (n_people,), generator=gen),  # plain, stripes, two-tone, logo
            "stripe_freq": uniform(gen, n_people, 4.0, 9.0),
            "long_sleeves": torch.rand(n_people, generator=gen) < 0.5,
            "pants": torch.where((torch.rand(n_people, generator=gen) < 0.7)[:, None],
                                 _PANTS[torch.randint(len(_PANTS), (n_people,), generator=gen)],
                                 hsv_to_rgb(torch.rand(n_people, generator=gen), uniform(gen, n_people, 0.3, 0.9),
                                            uniform(gen, n_people, 0.3, 0.9))),
            "shorts": torch.rand(n_people, generator=gen) < 0.25,
            "shoes": torch.where((torch.rand(n_people, generator=gen) < 0.5)[:, None], torch.tensor([0.1, 0.1, 0.1]),
                                 torch.tensor([0.9, 0.9, 0.88])),
            "bag": torch.randint(3, (n_people,), generator=gen),  # none, backpack, handbag
            "bag_color": hsv_to_rgb(torch.rand(n_people, generator=gen), uniform(gen, n_people, 0.2, 0.9),
                                    uniform(gen, n_people, 0.15, 0.8)),
            "build": uniform(gen, n_people, 0.85, 1.15),
            "height": uniform(gen, n_people, 0.92, 1.04),
        }
        # Camera families.
        m = c.n_cameras
        view_logits = torch.randn(m, 3, generator=gen) * 1.5
        camera = {
            "view_p": torch.softmax(view_logits, -1),
            "gain": uniform(gen, (m, 3), 0.75, 1.25),
            "gamma": uniform(gen, m, 0.75, 1.3),
            "offset": uniform(gen, m, -0.06, 0.06),
            "blur": uniform(gen, m, 0.0, 1.3),
            "noise": uniform(gen, m, 0.01, 0.06),
            "wall": hsv_to_rgb(torch.rand(m, generator=gen), uniform(gen, m, 0.0, 0.5), uniform(gen, m, 0.3, 0.9)),
            "floor": hsv_to_rgb(torch.rand(m, generator=gen), uniform(gen, m, 0.0, 0.4), uniform(gen, m, 0.2, 0.7)),
            "horizon": uniform(gen, m, 0.45, 0.8),
            "fill": uniform(gen, m, 0.72, 0.94),  # person height / image height
        }
        hi = (2 * self._hw[0], 2 * self._hw[1])
        images = F.avg_pool2d(self._draw(pid, cam, ident, camera, gen, hi), 2)
        for k in range(m):  # camera blur and colour response, camera by camera
            sel = cam == k
            x = gaussian_blur(images[sel], float(camera["blur"][k]))
            images[sel] = (x * camera["gain"][k][None, :, None, None] + camera["offset"][k]).clamp(0, 1) \
                ** camera["gamma"][k]
        noise = camera["noise"][cam][:, None, None, None]
        images = images + noise * torch.randn(images.shape, generator=gen)
        return {"images": to_uint8(images), "pid": pid, "camid": cam, "is_query": torch.from_numpy(query_np)}

    def _draw(self, pid: torch.Tensor, cam: torch.Tensor, ident: dict, camera: dict, gen: torch.Generator,
              hw: tuple[int, int]) -> torch.Tensor:
        """Render every image at ``hw`` (twice the output size): background, clutter, person, occluder."""
        n = len(pid)
        h, w = hw
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        yy, xx = yy[None], xx[None]

        # Background: wall above the camera's horizon, floor below, soft texture, two clutter boxes.
        horizon = _col(camera["horizon"][cam] + uniform(gen, n, -0.05, 0.05))
        below = (yy > horizon)[:, None]
        background = torch.where(below, camera["floor"][cam][:, :, None, None], camera["wall"][cam][:, :, None, None])
        background = background * (1 + 0.12 * smooth_field(gen, n, 1, 5, hw))
        # Everything else is flat colour: paint part ids into one map, look the colours up at the end.
        part = torch.zeros(n, h, w, dtype=torch.long)
        palette = [torch.zeros(n, 3)]  # id 0: the textured background

        def paint(mask: torch.Tensor, colour: torch.Tensor) -> None:
            part.masked_fill_(mask, len(palette))
            palette.append(colour)

        for _ in range(2):
            x0, y0 = _col(uniform(gen, n, -0.2, 0.9)), _col(uniform(gen, n, 0.0, 0.9))
            bw, bh = _col(uniform(gen, n, 0.1, 0.4)), _col(uniform(gen, n, 0.05, 0.3))
            box = _rect(xx, yy, x0, x0 + bw, y0, y0 + bh) & _col(torch.rand(n, generator=gen) < 0.7)
            paint(box, torch.rand(n, 3, generator=gen))

        # Person frame: u across (0 = body axis, in units of the image width), v down (0 = head top, 1 = feet).
        p = pid
        view = torch.multinomial(camera["view_p"][cam], 1, generator=gen)[:, 0]
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        height = camera["fill"][cam] * ident["height"][p] * uniform(gen, n, 0.94, 1.06)
        top = (1 - height) * uniform(gen, n, 0.2, 0.8)
        centre = 0.5 + uniform(gen, n, -0.08, 0.08)
        width = ident["build"][p] * torch.where(view == SIDE, 0.72, 1.0) * height
        u = (xx - _col(centre)) / _col(width) * _col(flip)
        v = (yy - _col(top)) / _col(height)
        stride = _col(uniform(gen, n, 0.0, 0.09))  # walking: legs apart, arms swing

        front, back, side = _col(view == FRONT), _col(view == BACK), _col(view == SIDE)
        skin, hair, shirt, shirt2 = ident["skin"][p], ident["hair"][p], ident["shirt"][p], ident["shirt2"][p]
        bag, bag_colour = _col(ident["bag"][p]), ident["bag_color"][p]
        # Backpack seen from the side sticks out behind; handbag hangs at the right hand.
        paint(_rect(u, v, -0.34, -0.2, 0.2, 0.45) & side & (bag == 1), bag_colour)
        paint(_rect(u, v, -0.1, 0.1, 0.1, 0.28) & _col(ident["long_hair"][p]), hair)  # long hair behind the back
        # Legs, trousers or shorts, shoes.
        for sign in (-1.0, 1.0):
            leg_u = u - sign * (0.085 + stride)
            leg = _rect(leg_u, v, -0.075, 0.075, 0.52, 0.94)
            paint(leg, ident["pants"][p])
            paint(leg & _col(ident["shorts"][p]) & (v > 0.7), skin)
            paint(_rect(leg_u, v, -0.08, 0.1, 0.93, 1.0), ident["shoes"][p])
        # Arms (sleeves or bare below the elbow) with hands.
        for sign in (-1.0, 1.0):
            swing = sign * stride * 0.5
            arm_v = v + swing
            arm = _rect(u * sign, arm_v, 0.2, 0.28, 0.18, 0.5)
            paint(arm, shirt)
            paint(arm & ~_col(ident["long_sleeves"][p]) & (arm_v > 0.3), skin)
            paint(_rect(u * sign, arm_v, 0.2, 0.28, 0.5, 0.55), skin)
        # Torso with the shirt pattern.
        torso = _rect(u, v, -0.2, 0.2, 0.17, 0.53)
        paint(torso, shirt)
        pattern = _col(ident["pattern"][p])
        stripes = torch.sin(2 * math.pi * v * _col(ident["stripe_freq"][p])) > 0
        paint(torso & (pattern == 1) & stripes, shirt2)
        paint(torso & (pattern == 2) & (v > 0.36), shirt2)
        paint(_rect(u, v, -0.08, 0.08, 0.24, 0.33) & (pattern == 3) & front, shirt2)
        paint(_rect(u, v, -0.15, 0.15, 0.2, 0.45) & back & (bag == 1), bag_colour)  # backpack from behind
        paint(_rect(u, v, 0.28, 0.4, 0.42, 0.58) & (bag == 2) & ~back, bag_colour)  # handbag
        # Head: face from the front and side, hair from behind.
        head = (u / 0.11) ** 2 + ((v - 0.085) / 0.085) ** 2 < 1
        paint(head, skin)
        paint(head & ((v < 0.05) | back | (side & (u < -0.02))), hair)

        # Sometimes something occludes the lower body.
        occ_top = _col(uniform(gen, n, 0.55, 0.8))
        occluded = (yy > occ_top) & _col(torch.rand(n, generator=gen) < 0.12)
        paint(occluded, torch.rand(n, 3, generator=gen))
        colours = torch.stack(palette, 1)  # (n, parts, 3)
        flat = torch.gather(colours, 1, part.view(n, -1, 1).expand(-1, -1, 3))
        img = flat.view(n, h, w, 3).permute(0, 3, 1, 2)
        return torch.where((part == 0)[:, None], background, img)
