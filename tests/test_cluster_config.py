"""The shipped cluster configs pass Ray's own autoscaler config validation, and have the shape a sweep needs."""

from pathlib import Path

import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).parents[1]


def test_cluster_yaml_validates() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema or consistency error
    assert config["provider"]["type"] == "aws"
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # the head runs no trials
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu)  # autoscaled from 0
    assert all(t["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"} for t in gpu)
    assert "./" in config["file_mounts"].values()
    assert any("pip install" in c and "/home/ray/tuner" in c for c in config["setup_commands"])


def test_local_cluster_yaml_validates() -> None:
    config = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())
    validate_config(config)  # complete as is: the fake provider's defaults file is not in Ray's wheel
    assert config["provider"]["type"] == "fake_multinode"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0, "GPU": 0}
    assert types["gpu_worker"]["resources"]["GPU"] == 1 and types["gpu_worker"]["min_workers"] == 0
    assert config["idle_timeout_minutes"] < 1  # scale-down shows within a test
