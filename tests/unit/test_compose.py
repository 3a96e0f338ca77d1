"""docker-compose.yml is consistent (no Docker engine here to run it)."""

import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]


def test_compose_file_is_consistent():
    text = (PROJECT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "airflow"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], (name, source)
            else:
                assert (PROJECT / source).exists(), (name, source)
    # Every secret it uses is in the example .env, and none is written into the file itself.
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)\}", text))
    example = (PROJECT / ".env.example").read_text()
    assert variables == set(re.findall(r"^(\w+)=", example, re.M))
    assert "mb --ignore-existing --with-lock local/call-recordings" in text
