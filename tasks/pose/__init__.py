"""Human-pose tasks (COCO keypoints, CrowdPose): mini-data generators, layout checks and OKS evaluation."""
