"""The one CRI call the tests make, `runtime.v1.ImageService/PullImage`, without generated code.

The kubelet pulls through containerd's CRI plugin, which labels each layer's snapshot with
`containerd.io/snapshot/cri.layer-digest`. The request and response types are declared here
in a small descriptor (field numbers as in k8s.io/cri-api `runtime/v1/api.proto`:
PullImageRequest.image = 1, ImageSpec.image = 1, PullImageResponse.image_ref = 1), so the
project needs no CRI protos for one test client.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PULL_IMAGE = "/runtime.v1.ImageService/PullImage"


def _messages() -> tuple[type, type]:
    proto = descriptor_pb2.FileDescriptorProto(name="snapmux_tests_cri_subset.proto", package="runtime.v1",
                                               syntax="proto3")
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    spec = proto.message_type.add(name="ImageSpec")
    spec.field.add(name="image", number=1, type=string, label=optional)
    request = proto.message_type.add(name="PullImageRequest")
    request.field.add(name="image", number=1, type=message, label=optional, type_name=".runtime.v1.ImageSpec")
    response = proto.message_type.add(name="PullImageResponse")
    response.field.add(name="image_ref", number=1, type=string, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("runtime.v1.PullImageRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("runtime.v1.PullImageResponse")))


PullImageRequest, PullImageResponse = _messages()


def pull_image(containerd_address: str, reference: str, timeout: float = 300) -> str:
    """What the kubelet does; returns the image ref (config digest) containerd reports."""
    with grpc.insecure_channel(f"unix://{containerd_address}") as channel:
        call = channel.unary_unary(PULL_IMAGE, request_serializer=PullImageRequest.SerializeToString,
                                   response_deserializer=PullImageResponse.FromString)
        request = PullImageRequest()
        request.image.image = reference
        return call(request, timeout=timeout).image_ref
