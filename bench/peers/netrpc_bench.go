// netrpc_bench: peer benchmark of Go's standard net/rpc (gob codec) over
// loopback, for side-by-side comparison with libdistml's bench/rpc_bench.
//
// One process: a net/rpc server on 127.0.0.1:0 and a client from rpc.Dial.
// Figures (each loop bounded in call count and wall time):
//  1. sequential Arith.Multiply calls/s, one call in flight;
//  2. pipelined Arith.Multiply calls/s, 64 goroutines sharing one *rpc.Client;
//  3. Arith.Sum with a 40 MB []float32 argument (10,000,000 values), MB/s.
//
// Figures 1 and 2 are the median of 3 rounds, figure 3 the median of 5 calls
// after one warm-up call.
//
// Standard library only. Build: go build -o netrpc_bench netrpc_bench.go
// The last line of output is:
//
//	RESULT go_netrpc seq_calls_per_s=<f> pipelined_calls_per_s=<f> bulk_MB_per_s=<f>
package main

import (
	"fmt"
	"net"
	"net/rpc"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type Args struct{ A, B int64 }
type Reply struct{ C int64 }
type Floats struct{ V []float32 }

type Arith int

func (t *Arith) Multiply(args *Args, reply *Reply) error {
	reply.C = args.A * args.B
	return nil
}

func (t *Arith) Sum(args *Floats, reply *Reply) error {
	reply.C = int64(len(args.V))
	return nil
}

const (
	rounds       = 3
	roundTime    = 1 * time.Second // per round of figures 1 and 2 (cap: 3 s)
	maxCalls     = 2000000
	maxRoundTime = 3 * time.Second
	inFlight     = 64
	bulkN        = 10000000 // float32 values: 40 MB
	bulkCalls    = 5
)

func die(what string, err error) {
	fmt.Fprintf(os.Stderr, "netrpc_bench: %s: %v\n", what, err)
	os.Exit(1)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// seqRound makes sequential calls for about d (at most maxCalls, at most
// maxRoundTime) and returns calls/s.
func seqRound(c *rpc.Client, d time.Duration) float64 {
	var reply Reply
	start := time.Now()
	deadline := start.Add(d)
	n := 0
	for n < maxCalls {
		args := Args{int64(n), 7}
		if err := c.Call("Arith.Multiply", &args, &reply); err != nil {
			die("Arith.Multiply", err)
		}
		if reply.C != int64(n)*7 {
			die("Arith.Multiply", fmt.Errorf("bad reply %d", reply.C))
		}
		n++
		if n&63 == 0 && time.Now().After(deadline) {
			break
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// pipeRound runs inFlight goroutines sharing one client, each making
// sequential calls until the shared count or time budget runs out.
func pipeRound(c *rpc.Client, d time.Duration) float64 {
	var issued int64
	var done int64
	var stop int32
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < inFlight; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var reply Reply
			for atomic.LoadInt32(&stop) == 0 {
				i := atomic.AddInt64(&issued, 1)
				if i > maxCalls {
					return
				}
				args := Args{i, int64(g)}
				if err := c.Call("Arith.Multiply", &args, &reply); err != nil {
					die("Arith.Multiply (pipelined)", err)
				}
				if reply.C != i*int64(g) {
					die("Arith.Multiply (pipelined)", fmt.Errorf("bad reply %d", reply.C))
				}
				atomic.AddInt64(&done, 1)
			}
		}(g)
	}
	timer := time.AfterFunc(d, func() { atomic.StoreInt32(&stop, 1) })
	wg.Wait()
	timer.Stop()
	return float64(atomic.LoadInt64(&done)) / time.Since(start).Seconds()
}

func bulkCall(c *rpc.Client, args *Floats) float64 {
	var reply Reply
	start := time.Now()
	if err := c.Call("Arith.Sum", args, &reply); err != nil {
		die("Arith.Sum", err)
	}
	secs := time.Since(start).Seconds()
	if reply.C != int64(len(args.V)) {
		die("Arith.Sum", fmt.Errorf("bad reply %d", reply.C))
	}
	return float64(len(args.V)) * 4 / 1e6 / secs
}

func main() {
	d := roundTime
	if d > maxRoundTime {
		d = maxRoundTime
	}

	srv := rpc.NewServer()
	if err := srv.Register(new(Arith)); err != nil {
		die("register", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("listen", err)
	}
	go srv.Accept(ln)

	c, err := rpc.Dial("tcp", ln.Addr().String())
	if err != nil {
		die("dial", err)
	}
	defer c.Close()

	// Warm-up: gob type exchange, goroutines, TCP buffers.
	seqRound(c, 200*time.Millisecond)
	pipeRound(c, 200*time.Millisecond)

	var seq, pipe []float64
	for r := 0; r < rounds; r++ {
		seq = append(seq, seqRound(c, d))
		pipe = append(pipe, pipeRound(c, d))
	}

	args := &Floats{V: make([]float32, bulkN)}
	for i := range args.V {
		args.V[i] = float32(i) * 0.5
	}
	bulkCall(c, args) // warm-up
	var bulk []float64
	for i := 0; i < bulkCalls; i++ {
		bulk = append(bulk, bulkCall(c, args))
	}

	ms, mp, mb := median(seq), median(pipe), median(bulk)
	fmt.Printf("# Go %s net/rpc (gob) over loopback; figures 1-2: median of %d rounds of %.1f s, figure 3: median of %d calls\n",
		runtime.Version(), rounds, d.Seconds(), bulkCalls)
	fmt.Printf("# seq rounds (calls/s):       %.0f\n", seq)
	fmt.Printf("# pipelined rounds (calls/s): %.0f\n", pipe)
	fmt.Printf("# bulk calls (MB/s):          %.0f\n", bulk)
	fmt.Printf("RESULT go_netrpc seq_calls_per_s=%.0f pipelined_calls_per_s=%.0f bulk_MB_per_s=%.0f\n", ms, mp, mb)
}
