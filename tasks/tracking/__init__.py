"""Single-object tracking: GOT-10k and LaSOT with trackers built on the backbone under test."""
