import pytest

from benchmark import registry
from benchmark.errors import BenchmarkError
from tests.conftest import planned_task_dir

ISSUE_TASKS = (["cog_l1", "cog_l2", "cog_l3", "cog_l4", "cog_l5"]
               + [f"k12_{n}" for n in ("food101", "cifar10", "cifar100", "birdsnap", "sun397", "cars", "aircraft",
                                      "voc2007", "dtd", "pets", "caltech101", "flowers102")]
               + ["inat18", "coco_pose", "crowdpose", "nyu_depth", "kitti_depth", "got10k", "lasot", "coco_det",
                  "ade20k_seg", "ade20k_m2f"])


def test_every_task_of_the_paper_is_declared_in_its_suite():
    specs = registry.load_specs()
    assert set(ISSUE_TASKS) <= set(specs)
    suites = registry.suites(specs)
    assert set(suites["semantic"]) == {t for t in ISSUE_TASKS if t.startswith(("cog", "k12", "inat"))}
    assert set(suites["geometric"]) == {"coco_pose", "crowdpose", "nyu_depth", "kitti_depth", "got10k", "lasot"}
    assert set(suites["combined"]) == {"coco_det", "ade20k_seg", "ade20k_m2f"}
    assert set(suites["all"]) == set(ISSUE_TASKS)
    assert registry.groups(specs)["k12"] == [t for t in ISSUE_TASKS if t.startswith("k12")]
    assert len(registry.groups(specs)["cog"]) == 5


def test_includes_merge_and_directions():
    specs = registry.load_specs()
    assert specs["k12_aircraft"].primary.name == "mean_per_class_acc"  # overrides the base's top1
    assert specs["k12_aircraft"].group == "k12" and specs["k12_aircraft"].suite == "semantic"
    assert specs["nyu_depth"].primary.direction == "down" and specs["nyu_depth"].primary.arrow == "↓"
    assert specs["nyu_depth"].metric("d1").direction == "up"
    assert specs["cog_l3"].dataset["subdir"] == "cog"


def test_resolve_groups_suites_and_did_you_mean():
    assert [s.name for s in registry.resolve(tasks="cog")] == [f"cog_l{i}" for i in range(1, 6)]
    assert len(registry.resolve(suite="all")) == 27
    names = [s.name for s in registry.resolve(tasks="coco_pose,coco_pose,nyu_depth")]
    assert names == ["coco_pose", "nyu_depth"]
    with pytest.raises(BenchmarkError, match="did you mean k12_cifar10"):
        registry.resolve(tasks="k12_cifar1O")
    with pytest.raises(BenchmarkError, match="did you mean geometric"):
        registry.resolve(suite="geometrc")
    with pytest.raises(BenchmarkError, match="no task selected"):
        registry.resolve()


def test_adapters_load_lazily_and_unimplemented_are_refused(tmp_path):
    spec = registry.get_task("fashion_mnist_probe")
    assert spec.implemented
    assert registry.load_adapter(spec).__name__ == "FashionMNISTProbe"
    with pytest.raises(BenchmarkError, match="not implemented yet"):
        specs = registry.load_specs(str(planned_task_dir(tmp_path)))
        registry.load_adapter(registry.get_task("planned_task", specs))


def test_config_hash_tracks_preset(tmp_path):
    spec = registry.get_task("fashion_mnist_probe")
    assert spec.config_hash("ci") != spec.config_hash("paper")
    assert spec.config_hash("ci") == registry.get_task("fashion_mnist_probe").config_hash("ci")
    with pytest.raises(BenchmarkError, match="no preset 'fast'"):
        spec.preset("fast")


def test_bad_spec_and_include_cycle(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nsuite: demo\nmetrics: [{name: a, direction: sideways}]\n")
    with pytest.raises(BenchmarkError, match="bad task spec"):
        registry.load_specs(str(tmp_path))
    (tmp_path / "bad.yaml").unlink()
    (tmp_path / "_a.yaml").write_text("include: _b.yaml\n")
    (tmp_path / "_b.yaml").write_text("include: _a.yaml\n")
    (tmp_path / "c.yaml").write_text("include: _a.yaml\nname: c\nsuite: demo\nmetrics: [{name: a, direction: up}]\n")
    with pytest.raises(BenchmarkError, match="cycle"):
        registry.load_specs(str(tmp_path))
