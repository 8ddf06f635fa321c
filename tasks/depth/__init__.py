"""Monocular depth tasks (NYUv2, KITTI Eigen split): mmseg parts, mini data, converters, checks."""
