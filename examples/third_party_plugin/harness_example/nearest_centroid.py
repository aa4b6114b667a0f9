"""Nearest-centroid accuracy on held-out images of the training classes, in the method's geometry."""

from dataclasses import dataclass

import numpy as np
import torch

from harness.task import UNIT, Protocol, Task


class NearestCentroid(Task):
    VERSION = "1"
    requires = frozenset({"label"})
    METRICS = {"accuracy": True}
    BOUNDS = {"accuracy": UNIT}

    @dataclass
    class Config:
        name: str = "nearest_centroid"

    def protocol(self, dataset):
        return Protocol(train=dataset.split("train"), train_label="label", eval={"test": dataset.split("test")})

    def evaluate(self, ctx):
        train, test = ctx.protocol.train, ctx.protocol.eval["test"]
        classes, y_train = np.unique(ctx.annotation("label", train), return_inverse=True)
        protos = ctx.geometry.class_prototypes(ctx.embed(train).embeddings, torch.as_tensor(y_train), len(classes))
        pred = ctx.geometry.pairwise_dist(ctx.embed(test).embeddings, protos).argmin(1).numpy()
        return {"accuracy": self.metric("accuracy", float(np.mean(classes[pred] == ctx.annotation("label", test))),
                                        n=len(test))}
