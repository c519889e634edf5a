// Command refsnapshotter is the Go reference for the hot-path bench: containerd's
// own overlayfs snapshotter served over gRPC by contrib/snapshotservice on a unix
// socket, as containerd's plugin guide writes a proxy snapshotter. Removal is
// asynchronous, as in containerd's builtin overlayfs plugin.
//
//	refsnapshotter -root DIR -address SOCK
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "snapshotter state directory")
	address := flag.String("address", "", "unix socket to listen on")
	flag.Parse()
	sn, err := overlay.NewSnapshotter(*root, overlay.AsynchronousRemove)
	if err != nil {
		log.Fatalf("overlay snapshotter: %v", err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(sn))
	_ = os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.GracefulStop()
	}()
	if err := server.Serve(listener); err != nil {
		log.Fatalf("serve: %v", err)
	}
	_ = sn.Close()
}
