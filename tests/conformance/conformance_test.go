// Package conformance runs containerd's snapshotter test suite (snapshots/testsuite, from
// Debian's golang-github-containerd-containerd-dev) against any snapshotter that serves
// containerd's snapshots gRPC API on a unix socket, through containerd's own proxy client:
// the same client containerd uses for a proxy_plugins snapshotter.
//
// The snapshotter is a command line in $SNAPSHOTTER_CMD; "{root}" and "{socket}" in it are
// replaced, for each case, by a fresh state directory and a socket inside the case's root.
// One process per case: the suite runs its cases in parallel and each expects a snapshotter
// of its own.
//
// The suite is registered as "overlayfs", the name containerd gives its own overlayfs
// snapshotter, because the snapshotters under test are overlayfs snapshotters: whatever
// the suite skips or adapts for overlayfs (by name) it skips or adapts here for the same reason.
//
// Built by build.sh beside this file; tests/support/conformance.py runs it.
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// suiteName selects the suite's overlayfs-specific behaviour (see the package comment).
const suiteName = "overlayfs"

// readyWithin bounds a snapshotter's start-up; stopWithin its shutdown after SIGTERM.
const (
	readyWithin = 60 * time.Second
	stopWithin  = 10 * time.Second
)

func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the suite mounts overlayfs: run it as root")
	}
	template := os.Getenv("SNAPSHOTTER_CMD")
	if template == "" {
		t.Fatal("SNAPSHOTTER_CMD is not set: the snapshotter command line, with {root} and {socket}")
	}
	testsuite.SnapshotterSuite(t, suiteName, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startSnapshotter(ctx, template, root)
	})
}

// daemon is one snapshotter process, in a process group of its own so that a wrapper
// (sh, env, a whole stack) goes down with everything it started.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startDaemon(line string) (*daemon, error) {
	cmd := exec.Command("/bin/sh", "-c", "exec "+line)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", line, err)
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	return d, nil
}

func (d *daemon) signal(sig syscall.Signal) { _ = syscall.Kill(-d.cmd.Process.Pid, sig) }

func (d *daemon) stop() {
	d.signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopWithin):
		d.signal(syscall.SIGKILL)
		<-d.exited
	}
}

// waitListening polls the socket until it accepts, the process exits or the deadline passes;
// an early exit is reported at once with the process's status, not after the deadline.
func (d *daemon) waitListening(socket string) error {
	deadline := time.Now().Add(readyWithin)
	for {
		if conn, err := net.Dial("unix", socket); err == nil {
			return conn.Close()
		}
		select {
		case <-d.exited:
			return fmt.Errorf("snapshotter exited before listening on %s: %v", socket, d.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("snapshotter did not listen on %s within %s", socket, readyWithin)
		}
	}
}

func startSnapshotter(ctx context.Context, template, root string) (snapshots.Snapshotter, func() error, error) {
	socket := filepath.Join(root, "snapshotter.sock")
	line := strings.NewReplacer("{root}", filepath.Join(root, "state"), "{socket}", socket).Replace(template)
	d, err := startDaemon(line)
	if err != nil {
		return nil, nil, err
	}
	if err := d.waitListening(socket); err != nil {
		d.stop()
		return nil, nil, err
	}
	conn, err := grpc.DialContext(ctx, "unix://"+socket, grpc.WithInsecure())
	if err != nil {
		d.stop()
		return nil, nil, fmt.Errorf("dial %s: %w", socket, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), suiteName)
	cleanup := func() error {
		defer d.stop()
		defer conn.Close()
		return sn.Close()
	}
	return sn, cleanup, nil
}
