"""Occupancy grid, ray marching to packed samples, and volume compositing."""
