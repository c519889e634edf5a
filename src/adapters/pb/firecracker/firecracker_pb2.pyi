from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetVMInfoRequest(_message.Message):
    __slots__ = ("VMID",)
    VMID_FIELD_NUMBER: _ClassVar[int]
    VMID: str
    def __init__(self, VMID: _Optional[str] = ...) -> None: ...

class GetVMInfoResponse(_message.Message):
    __slots__ = ("VMID", "SocketPath", "LogFifoPath", "MetricsFifoPath", "CgroupPath", "VSockPath")
    VMID_FIELD_NUMBER: _ClassVar[int]
    SOCKETPATH_FIELD_NUMBER: _ClassVar[int]
    LOGFIFOPATH_FIELD_NUMBER: _ClassVar[int]
    METRICSFIFOPATH_FIELD_NUMBER: _ClassVar[int]
    CGROUPPATH_FIELD_NUMBER: _ClassVar[int]
    VSOCKPATH_FIELD_NUMBER: _ClassVar[int]
    VMID: str
    SocketPath: str
    LogFifoPath: str
    MetricsFifoPath: str
    CgroupPath: str
    VSockPath: str
    def __init__(self, VMID: _Optional[str] = ..., SocketPath: _Optional[str] = ..., LogFifoPath: _Optional[str] = ..., MetricsFifoPath: _Optional[str] = ..., CgroupPath: _Optional[str] = ..., VSockPath: _Optional[str] = ...) -> None: ...
