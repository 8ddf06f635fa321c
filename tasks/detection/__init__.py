"""Object detection and instance segmentation (COCO 2017 instances): mini-data generator and layout check."""
