// Command loadclient drives one snapshots operation against a snapshotter's
// unix socket through containerd's own proxy client (snapshots/proxy), from N
// concurrent goroutines, and prints latency percentiles and throughput as JSON.
//
// A Go client costs a few microseconds per call, so what it measures is the
// server, not the client (a Python client adds about a millisecond per call).
//
//	loadclient -address SOCK -op stat|mounts|prepare|list -clients 16 -duration 3s
//	           [-snapshotter overlayfs -namespace bench]   (containerd's own API)
//
// "prepare" is a Prepare+Commit+Remove cycle; each step is reported on its own.
// Keys carry a per-run prefix so runs never collide on a long-lived server.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

// gcRoot keeps containerd's garbage collector off the bench's snapshots.
var gcRoot = snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "2026-01-01T00:00:00Z"})

type stats struct {
	Count      int     `json:"count"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MeanMs     float64 `json:"mean_ms"`
	Throughput float64 `json:"throughput_per_s"`
}

type report struct {
	Op      string           `json:"op"`
	Clients int              `json:"clients"`
	Seconds float64          `json:"seconds"`
	Errors  int              `json:"errors"`
	Steps   map[string]stats `json:"steps"`
	Error   string           `json:"error,omitempty"`
	// ServerCPUUs is the CPU time the -pids processes (all their threads) used during the
	// measured window, per call: the server's own cost, whatever else runs on the machine.
	ServerCPUUs float64 `json:"server_cpu_us_per_call,omitempty"`
}

// cpuNanos sums the run time of every thread of the given processes (schedstat, in ns).
func cpuNanos(pids []string) int64 {
	var total int64
	for _, pid := range pids {
		tasks, _ := filepath.Glob("/proc/" + pid + "/task/*/schedstat")
		for _, task := range tasks {
			data, err := os.ReadFile(task)
			if err != nil {
				continue
			}
			var ns int64
			if _, err := fmt.Sscan(string(data), &ns); err == nil {
				total += ns
			}
		}
	}
	return total
}

type worker struct {
	sn      snapshots.Snapshotter
	prefix  string
	base    string
	active  string
	samples map[string][]time.Duration
	errors  int
	lastErr error
}

func (w *worker) timed(step string, call func() error) {
	start := time.Now()
	err := call()
	if err != nil {
		w.errors++
		w.lastErr = err
		return
	}
	w.samples[step] = append(w.samples[step], time.Since(start))
}

func (w *worker) once(ctx context.Context, op string, n int) {
	switch op {
	case "stat":
		w.timed("stat", func() error { _, err := w.sn.Stat(ctx, w.base); return err })
	case "mounts":
		w.timed("mounts", func() error { _, err := w.sn.Mounts(ctx, w.active); return err })
	case "list":
		w.timed("list", func() error {
			return w.sn.Walk(ctx, func(context.Context, snapshots.Info) error { return nil })
		})
	case "prepare":
		key, name := fmt.Sprintf("%s-a%d", w.prefix, n), fmt.Sprintf("%s-c%d", w.prefix, n)
		w.timed("prepare", func() error { _, err := w.sn.Prepare(ctx, key, w.base, gcRoot); return err })
		w.timed("commit", func() error { return w.sn.Commit(ctx, name, key, gcRoot) })
		w.timed("remove", func() error { return w.sn.Remove(ctx, name) })
	}
}

// setup makes the committed base every worker uses, an active snapshot per
// worker for Mounts, and `populate` extra committed snapshots for List.
func setup(ctx context.Context, sn snapshots.Snapshotter, run string, clients, populate int) (string, []string, error) {
	base := run + "-base"
	if _, err := sn.Prepare(ctx, base+"-a", "", gcRoot); err != nil {
		return "", nil, fmt.Errorf("prepare base: %w", err)
	}
	if err := sn.Commit(ctx, base, base+"-a", gcRoot); err != nil {
		return "", nil, fmt.Errorf("commit base: %w", err)
	}
	actives := make([]string, clients)
	for i := range actives {
		actives[i] = fmt.Sprintf("%s-active-%d", run, i)
		if _, err := sn.Prepare(ctx, actives[i], base, gcRoot); err != nil {
			return "", nil, fmt.Errorf("prepare active: %w", err)
		}
	}
	for i := 0; i < populate; i++ {
		key, name := fmt.Sprintf("%s-pa%d", run, i), fmt.Sprintf("%s-pc%d", run, i)
		if _, err := sn.Prepare(ctx, key, base, gcRoot); err != nil {
			return "", nil, err
		}
		if err := sn.Commit(ctx, name, key, gcRoot); err != nil {
			return "", nil, err
		}
	}
	return base, actives, nil
}

// teardown removes what setup made, children first, so the next run's List
// sees the same number of snapshots.
func teardown(ctx context.Context, sn snapshots.Snapshotter, run, base string, actives []string, populate int) {
	for i := 0; i < populate; i++ {
		_ = sn.Remove(ctx, fmt.Sprintf("%s-pc%d", run, i))
	}
	for _, key := range actives {
		_ = sn.Remove(ctx, key)
	}
	_ = sn.Remove(ctx, base)
}

func summarize(all []time.Duration, seconds float64) stats {
	if len(all) == 0 {
		return stats{}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
	p99 := int(float64(len(all)) * 0.99)
	if p99 >= len(all) {
		p99 = len(all) - 1
	}
	return stats{
		Count: len(all), P50Ms: ms(all[len(all)/2]), P99Ms: ms(all[p99]),
		MeanMs: ms(sum) / float64(len(all)), Throughput: float64(len(all)) / seconds,
	}
}

func main() {
	address := flag.String("address", "", "unix socket path of the snapshots service")
	op := flag.String("op", "stat", "stat | mounts | prepare (prepare+commit+remove) | list")
	clients := flag.Int("clients", 1, "concurrent clients (one goroutine each, one shared connection)")
	duration := flag.Duration("duration", 3*time.Second, "how long to measure (after the warm-up)")
	count := flag.Int("count", 0, "calls per client instead of -duration (0: use -duration)")
	warmup := flag.Duration("warmup", 300*time.Millisecond, "unmeasured calls first")
	name := flag.String("snapshotter", "", "snapshotter name in requests (containerd's API: overlayfs)")
	namespace := flag.String("namespace", "bench", "containerd namespace, sent as containerd-namespace metadata")
	populate := flag.Int("populate", 0, "extra committed snapshots to create before the run (for list)")
	noSetup := flag.Bool("no-setup", false, "skip creating snapshots (for a server that answers fixed messages)")
	pids := flag.String("pids", "", "comma-separated server pids whose CPU time per call is reported")
	flag.DurationVar(&cycleGap, "gap", 0, "quiet time before each call (cycle), not measured: a Prepare reaching an idle daemon, as in `ctr run`")
	flag.Parse()
	if *pids != "" {
		serverPids = strings.Split(*pids, ",")
	}
	rep := report{Op: *op, Clients: *clients, Steps: map[string]stats{}}
	if err := run(*address, *name, *namespace, *op, *clients, *count, *populate, *noSetup, *duration, *warmup, &rep); err != nil {
		rep.Error = err.Error()
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	if rep.Error != "" {
		os.Exit(1)
	}
}

var serverPids []string

var cycleGap time.Duration

func run(address, name, namespace, op string, clients, count, populate int, noSetup bool,
	duration, warmup time.Duration, rep *report) error {
	conn, err := grpc.Dial("unix://"+address, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	runID := fmt.Sprintf("lc%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	base, actives := runID+"-base", make([]string, clients)
	if !noSetup {
		if base, actives, err = setup(ctx, sn, runID, clients, populate); err != nil {
			return err
		}
		defer teardown(ctx, sn, runID, base, actives, populate)
	}
	workers := make([]*worker, clients)
	for i := range workers {
		workers[i] = &worker{sn: sn, prefix: fmt.Sprintf("%s-w%d", runID, i), base: base, active: actives[i],
			samples: map[string][]time.Duration{}}
	}
	warmEnd := time.Now().Add(warmup)
	for n := 0; time.Now().Before(warmEnd); n++ {
		workers[0].once(ctx, op, -1-n)
	}
	workers[0].samples, workers[0].errors = map[string][]time.Duration{}, 0
	cpuStart := cpuNanos(serverPids)
	start, end := time.Now(), time.Now().Add(duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			for n := 0; count > 0 && n < count || count == 0 && time.Now().Before(end); n++ {
				if cycleGap > 0 {
					time.Sleep(cycleGap)
				}
				w.once(ctx, op, n)
			}
		}(w)
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	cpu := cpuNanos(serverPids) - cpuStart
	merged := map[string][]time.Duration{}
	for _, w := range workers {
		rep.Errors += w.errors
		if w.lastErr != nil && rep.Error == "" && rep.Errors > 0 {
			rep.Error = w.lastErr.Error()
		}
		for step, s := range w.samples {
			merged[step] = append(merged[step], s...)
		}
	}
	calls := 0
	for step, s := range merged {
		rep.Steps[step] = summarize(s, rep.Seconds)
		calls += len(s)
	}
	if len(serverPids) > 0 && calls > 0 {
		rep.ServerCPUUs = float64(cpu) / 1e3 / float64(calls)
	}
	if rep.Errors > 0 {
		return fmt.Errorf("%d calls failed, last: %s", rep.Errors, rep.Error)
	}
	return nil
}
