"""A minimal containerd/ttrpc client: the wire firecracker-containerd's control plugin speaks."""
