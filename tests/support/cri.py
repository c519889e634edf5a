"""The CRI calls a kubelet makes for a pod, without generated code.

The request and response types are declared here as a small descriptor with only the fields
the tests set or read; field numbers are those of k8s.io/cri-api `runtime/v1/api.proto`
(enums travel as int32, which is the same varint on the wire). Unknown fields containerd
sends back are kept by protobuf and ignored, so the subset stays compatible.

    cri = CriClient(containerd.address)
    image_ref = cri.pull_image(reference)
    sandbox = cri.run_pod_sandbox(PodSpec("web", log_directory=str(tmp_path / "logs")))
    container = cri.create_container(sandbox, ContainerSpec("app", reference, ["sleep", "60"]))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _FIELD.TYPE_STRING, "bytes": _FIELD.TYPE_BYTES, "int32": _FIELD.TYPE_INT32,
            "int64": _FIELD.TYPE_INT64, "uint32": _FIELD.TYPE_UINT32}

# message -> (field, number, type, repeated); a type not in _SCALARS is a message of this table
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "ImageSpec": [("image", 1, "string", False)],
    "PodSandboxMetadata": [("name", 1, "string", False), ("uid", 2, "string", False),
                           ("namespace", 3, "string", False), ("attempt", 4, "uint32", False)],
    "NamespaceOption": [("network", 1, "int32", False), ("pid", 2, "int32", False), ("ipc", 3, "int32", False)],
    "LinuxSandboxSecurityContext": [("namespace_options", 1, "NamespaceOption", False)],
    "LinuxPodSandboxConfig": [("cgroup_parent", 1, "string", False),
                              ("security_context", 2, "LinuxSandboxSecurityContext", False)],
    "PodSandboxConfig": [("metadata", 1, "PodSandboxMetadata", False), ("hostname", 2, "string", False),
                         ("log_directory", 3, "string", False), ("linux", 8, "LinuxPodSandboxConfig", False)],
    "PodSandboxStatus": [("id", 1, "string", False), ("state", 3, "int32", False)],
    "ContainerMetadata": [("name", 1, "string", False), ("attempt", 2, "uint32", False)],
    "ContainerConfig": [("metadata", 1, "ContainerMetadata", False), ("image", 2, "ImageSpec", False),
                        ("command", 3, "string", True), ("args", 4, "string", True),
                        ("log_path", 11, "string", False)],
    "ContainerStatus": [("id", 1, "string", False), ("state", 3, "int32", False), ("exit_code", 7, "int32", False),
                        ("image_ref", 9, "string", False), ("reason", 10, "string", False),
                        ("message", 11, "string", False), ("log_path", 15, "string", False)],
    "PullImageRequest": [("image", 1, "ImageSpec", False)],
    "PullImageResponse": [("image_ref", 1, "string", False)],
    "RemoveImageRequest": [("image", 1, "ImageSpec", False)],
    "RunPodSandboxRequest": [("config", 1, "PodSandboxConfig", False)],
    "RunPodSandboxResponse": [("pod_sandbox_id", 1, "string", False)],
    "PodSandboxIdRequest": [("pod_sandbox_id", 1, "string", False)],  # Stop/Remove/PodSandboxStatus requests
    "PodSandboxStatusResponse": [("status", 1, "PodSandboxStatus", False)],
    "CreateContainerRequest": [("pod_sandbox_id", 1, "string", False), ("config", 2, "ContainerConfig", False),
                               ("sandbox_config", 3, "PodSandboxConfig", False)],
    "CreateContainerResponse": [("container_id", 1, "string", False)],
    "ContainerIdRequest": [("container_id", 1, "string", False)],  # Start/Remove/ContainerStatus requests
    "StopContainerRequest": [("container_id", 1, "string", False), ("timeout", 2, "int64", False)],
    "ContainerStatusResponse": [("status", 1, "ContainerStatus", False)],
    "ExecSyncRequest": [("container_id", 1, "string", False), ("cmd", 2, "string", True),
                        ("timeout", 3, "int64", False)],
    "ExecSyncResponse": [("stdout", 1, "bytes", False), ("stderr", 2, "bytes", False), ("exit_code", 3, "int32", False)],
    "Empty": [],  # every response the tests need nothing from
}


def _message_classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="snapmux_tests_cri_subset.proto", package="runtime.v1",
                                               syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            added = message.field.add(name=field_name, number=number,
                                      label=_FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL)
            if kind in _SCALARS:
                added.type = _SCALARS[kind]
            else:
                added.type, added.type_name = _FIELD.TYPE_MESSAGE, f".runtime.v1.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runtime.v1.{name}"))
            for name in _MESSAGES}


_TYPES = _message_classes()

NAMESPACE_NODE = 2  # NamespaceMode.NODE: the host's network, so no CNI is needed
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1  # PodSandboxState
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED = 0, 1, 2  # ContainerState


@dataclass(frozen=True)
class PodSpec:
    """What the kubelet puts in a PodSandboxConfig for a host-network pod (no hostname: the pod
    shares the host's UTS namespace, and runc refuses a hostname without a private one)."""

    name: str
    log_directory: str
    namespace: str = "default"
    uid: str = ""

    def config(self) -> Any:
        config = _TYPES["PodSandboxConfig"](log_directory=self.log_directory)
        config.metadata.name, config.metadata.namespace = self.name, self.namespace
        config.metadata.uid = self.uid or f"uid-{self.name}"
        config.linux.security_context.namespace_options.network = NAMESPACE_NODE
        return config


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> str:
        """Relative to the pod's log_directory, as the kubelet names it."""
        return f"{self.name}/0.log"


@dataclass(frozen=True)
class Sandbox:
    id: str
    spec: PodSpec


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int


class CriClient:
    """Blocking CRI v1 calls over containerd's socket, one channel per client."""

    def __init__(self, containerd_address: str, timeout: float = 300) -> None:
        self.channel = grpc.insecure_channel(f"unix://{containerd_address}")
        self.timeout = timeout
        self.sandboxes: dict[str, Sandbox] = {}  # run and not yet removed: what a teardown must stop

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, response: str = "Empty") -> Any:
        call = self.channel.unary_unary(f"/runtime.v1.{method}", request_serializer=type(request).SerializeToString,
                                        response_deserializer=_TYPES[response].FromString)
        return call(request, timeout=self.timeout)

    def pull_image(self, reference: str) -> str:
        """Returns the image ref (config digest) containerd reports."""
        request = _TYPES["PullImageRequest"]()
        request.image.image = reference
        return self._call("ImageService/PullImage", request, "PullImageResponse").image_ref

    def remove_image(self, reference: str) -> None:
        request = _TYPES["RemoveImageRequest"]()
        request.image.image = reference
        self._call("ImageService/RemoveImage", request)

    def run_pod_sandbox(self, pod: PodSpec) -> Sandbox:
        request = _TYPES["RunPodSandboxRequest"](config=pod.config())
        sandbox = Sandbox(self._call("RuntimeService/RunPodSandbox", request, "RunPodSandboxResponse").pod_sandbox_id,
                          pod)
        self.sandboxes[sandbox.id] = sandbox
        return sandbox

    def pod_sandbox_state(self, sandbox: Sandbox) -> int:
        request = _TYPES["PodSandboxIdRequest"](pod_sandbox_id=sandbox.id)
        return self._call("RuntimeService/PodSandboxStatus", request, "PodSandboxStatusResponse").status.state

    def stop_pod_sandbox(self, sandbox: Sandbox) -> None:
        self._call("RuntimeService/StopPodSandbox", _TYPES["PodSandboxIdRequest"](pod_sandbox_id=sandbox.id))

    def remove_pod_sandbox(self, sandbox: Sandbox) -> None:
        self._call("RuntimeService/RemovePodSandbox", _TYPES["PodSandboxIdRequest"](pod_sandbox_id=sandbox.id))
        self.sandboxes.pop(sandbox.id, None)

    def remove_leftover_pods(self) -> None:
        """Stops and removes every pod this client ran and did not remove (a failed test's): killing
        containerd and its shims would leave the pods' processes running."""
        for sandbox in list(self.sandboxes.values()):
            with contextlib.suppress(grpc.RpcError):
                self.stop_pod_sandbox(sandbox)  # kills the pod's containers too
                self.remove_pod_sandbox(sandbox)

    def create_container(self, sandbox: Sandbox, spec: ContainerSpec) -> str:
        config = _TYPES["ContainerConfig"](command=spec.command, log_path=spec.log_path)
        config.metadata.name, config.image.image = spec.name, spec.image
        request = _TYPES["CreateContainerRequest"](pod_sandbox_id=sandbox.id, config=config,
                                                   sandbox_config=sandbox.spec.config())
        return self._call("RuntimeService/CreateContainer", request, "CreateContainerResponse").container_id

    def start_container(self, container_id: str) -> None:
        self._call("RuntimeService/StartContainer", _TYPES["ContainerIdRequest"](container_id=container_id))

    def container_status(self, container_id: str) -> Any:
        """A ContainerStatus message: id, state, exit_code, image_ref, reason, message, log_path."""
        request = _TYPES["ContainerIdRequest"](container_id=container_id)
        return self._call("RuntimeService/ContainerStatus", request, "ContainerStatusResponse").status

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 60) -> ExecResult:
        request = _TYPES["ExecSyncRequest"](container_id=container_id, cmd=cmd, timeout=timeout)
        response = self._call("RuntimeService/ExecSync", request, "ExecSyncResponse")
        return ExecResult(response.stdout.decode(errors="replace"), response.stderr.decode(errors="replace"),
                          response.exit_code)

    def stop_container(self, container_id: str, grace_seconds: int = 10) -> None:
        request = _TYPES["StopContainerRequest"](container_id=container_id, timeout=grace_seconds)
        self._call("RuntimeService/StopContainer", request)

    def remove_container(self, container_id: str) -> None:
        self._call("RuntimeService/RemoveContainer", _TYPES["ContainerIdRequest"](container_id=container_id))


def pull_image(containerd_address: str, reference: str, timeout: float = 300) -> str:
    """What the kubelet does first; returns the image ref (config digest) containerd reports."""
    with CriClient(containerd_address, timeout) as client:
        return client.pull_image(reference)
