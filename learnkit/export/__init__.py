"""Deployment: what leaves the training loop. The pickle-free bundle (`export` / `load_learner`, bundle.py),
`Predictor` for inference without a Learner (predictor.py), graph exports `.pt2` / `.onnx` (graph.py) and the
model cards written beside every export (card.py). `learn.export(...)` is the one convenience in the loop's room.
"""
from learnkit.export.bundle import export, load_learner
from learnkit.export.card import data_fingerprint, model_card, write_model_card
from learnkit.export.graph import ServingModule, export_onnx, export_torch
from learnkit.export.predictor import Predictor

__all__ = ["Predictor", "ServingModule", "data_fingerprint", "export", "export_onnx", "export_torch", "load_learner",
           "model_card", "write_model_card"]
