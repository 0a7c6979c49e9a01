"""The shipped cluster.yaml passes Ray's own autoscaler config validation."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


def test_cluster_yaml_validates() -> None:
    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema or consistency error
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-")
