"""Pose as an inductive bias: the rigid warp, canonical frames, angle equivariance."""
