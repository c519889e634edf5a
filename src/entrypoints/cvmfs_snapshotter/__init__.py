"""cvmfs-snapshotter: containerd's overlayfs snapshotter semantics over SQLite, with CVMFS layers adopted in place."""
