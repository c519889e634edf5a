"""Image references named as docker and containerd name them (distribution's ParseNormalizedNamed):
short Docker Hub names, hosts only where the first component looks like one, `latest` by default."""

from __future__ import annotations

import pytest

from snapmux.adapters.cvmfs.oci import Reference, RegistrySource, open_source, parse_reference
from snapmux.domain.errors import InvalidArgumentError

DIGEST = "sha256:" + "ab" * 32
HUB = "registry-1.docker.io"


@pytest.mark.parametrize("reference, expected", [
    ("busybox", (HUB, "library/busybox", "latest")),
    ("busybox:1.36", (HUB, "library/busybox", "1.36")),
    ("library/busybox:1.36", (HUB, "library/busybox", "1.36")),
    ("docker.io/busybox", (HUB, "library/busybox", "latest")),
    ("docker.io/library/busybox", (HUB, "library/busybox", "latest")),
    ("index.docker.io/library/busybox", (HUB, "library/busybox", "latest")),
    ("index.docker.io/busybox:1.36", (HUB, "library/busybox", "1.36")),
    ("registry-1.docker.io/library/busybox:1.36", (HUB, "library/busybox", "1.36")),
    ("bitnami/redis:7.2", (HUB, "bitnami/redis", "7.2")),
    ("team/sub/app", (HUB, "team/sub/app", "latest")),
])
def test_docker_hub_names_are_normalised(reference, expected):
    assert parse_reference(reference) == Reference(*expected)


@pytest.mark.parametrize("reference, expected", [
    (f"busybox@{DIGEST}", (HUB, "library/busybox", DIGEST)),
    (f"library/busybox:1.36@{DIGEST}", (HUB, "library/busybox", DIGEST)),  # the digest wins, as in containerd
    (f"docker.io/busybox@{DIGEST}", (HUB, "library/busybox", DIGEST)),
    (f"ghcr.io/org/app@{DIGEST}", ("ghcr.io", "org/app", DIGEST)),
    (f"127.0.0.1:5000/a@{DIGEST}", ("127.0.0.1:5000", "a", DIGEST)),
])
def test_digests_name_the_manifest(reference, expected):
    assert parse_reference(reference) == Reference(*expected)


@pytest.mark.parametrize("reference, expected", [
    ("localhost/app", ("localhost", "app", "latest")),
    ("localhost:5000/app:v1", ("localhost:5000", "app", "v1")),
    ("127.0.0.1:5000/team/app", ("127.0.0.1:5000", "team/app", "latest")),
    ("[::1]:5000/app:v1", ("[::1]:5000", "app", "v1")),
    ("registry:5000/app", ("registry:5000", "app", "latest")),  # a port makes it a host
    ("registry.example/app", ("registry.example", "app", "latest")),  # so does a dot
    ("Registry/app", ("Registry", "app", "latest")),  # and upper case: a repository cannot have it
    ("quay.io/busybox", ("quay.io", "busybox", "latest")),  # no library/ outside Docker Hub
])
def test_a_first_component_is_a_host_only_when_it_looks_like_one(reference, expected):
    assert parse_reference(reference) == Reference(*expected)


@pytest.mark.parametrize("reference", [
    "", "Busybox", "library/Busybox", "busybox:", "busybox:-x", "/busybox", "busybox/", "docker.io/",
    "busybox@sha256:abc", "localhost:99999999/app", "a..b/c", "busybox:\u00e9t\u00e9",
])
def test_what_is_not_a_reference_is_refused(reference):
    with pytest.raises(InvalidArgumentError, match=r"is not \[host\[:port\]/\]repository"):
        parse_reference(reference)


def test_the_registry_source_talks_to_the_normalised_host(tmp_path):
    source = open_source("docker://library/busybox:1.36", str(tmp_path))
    assert isinstance(source, RegistrySource)
    assert (str(source.client.base_url), source.repo, source.ref) == (f"https://{HUB}/v2/", "library/busybox", "1.36")
