package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// workerProc is one worker process and the slice of connections it holds.
type workerProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	ip    string // source address, 127.0.0.x
	start int    // global index of its first connection
	count int
}

// pool is the coordinator's set of workers.
type pool []*workerProc

// startPool spawns ceil(conns/perWorker) workers, the i-th dialing from
// 127.0.0.(addrBase+i).
func startPool(ctx context.Context, conns, perWorker, addrBase int) (pool, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	n := (conns + perWorker - 1) / perWorker
	if addrBase < 2 || addrBase+n > 255 {
		return nil, fmt.Errorf("workers need source addresses 127.0.0.%d-%d: -addr-base must leave them within 2..254", addrBase, addrBase+n-1)
	}
	var p pool
	for i := range n {
		w := &workerProc{ip: fmt.Sprintf("127.0.0.%d", addrBase+i), start: i * perWorker, count: min(perWorker, conns-i*perWorker)}
		w.cmd = exec.CommandContext(ctx, exe)
		w.cmd.Env = append(os.Environ(), workerEnv+"=1")
		w.cmd.Stderr = os.Stderr
		w.cmd.WaitDelay = 5 * time.Second
		if w.in, err = w.cmd.StdinPipe(); err != nil {
			p.close()
			return nil, err
		}
		out, err := w.cmd.StdoutPipe()
		if err != nil {
			p.close()
			return nil, err
		}
		if err := w.cmd.Start(); err != nil {
			p.close()
			return nil, fmt.Errorf("start worker: %w", err)
		}
		w.enc, w.dec = json.NewEncoder(w.in), json.NewDecoder(out)
		p = append(p, w)
	}
	return p, nil
}

func (w *workerProc) call(c workerCmd) (workerStats, error) {
	var st workerStats
	if err := w.enc.Encode(c); err != nil {
		return st, fmt.Errorf("worker %s: %w", w.ip, err)
	}
	if err := w.dec.Decode(&st); err != nil {
		return st, fmt.Errorf("worker %s: %w", w.ip, err)
	}
	if st.Err != "" {
		return st, fmt.Errorf("worker %s: %s", w.ip, st.Err)
	}
	return st, nil
}

// each sends every worker its command at once and gathers the answers.
func (p pool) each(mk func(*workerProc) workerCmd) ([]workerStats, error) {
	out := make([]workerStats, len(p))
	errs := make([]error, len(p))
	var wg sync.WaitGroup
	for i, w := range p {
		wg.Go(func() { out[i], errs[i] = w.call(mk(w)) })
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// merge sums the workers' figures per node (per event: counts summed,
// the latest arrival kept) and gathers their first errors.
func merge(sts []workerStats, nodes int) (per []nodeStats, errs []string) {
	per = make([]nodeStats, nodes)
	for _, s := range sts {
		for k, n := range s.Nodes {
			if k >= nodes {
				break
			}
			m := &per[k]
			m.Open += n.Open
			m.Failed += n.Failed
			m.Dropped += n.Dropped
			m.Received += n.Received
			if len(n.Counts) > len(m.Counts) {
				m.Counts = append(m.Counts, make([]int64, len(n.Counts)-len(m.Counts))...)
				m.MaxLat = append(m.MaxLat, make([]int64, len(n.Counts)-len(m.MaxLat))...)
			}
			for i, c := range n.Counts {
				m.Counts[i] += c
			}
			for i, l := range n.MaxLat {
				if i < len(m.MaxLat) {
					m.MaxLat[i] = max(m.MaxLat[i], l)
				}
			}
		}
		if len(errs) < 5 {
			errs = append(errs, s.Errors...)
		}
	}
	return per, errs
}

// sumNodes is the figures of all nodes together, without per-event detail.
func sumNodes(per []nodeStats) nodeStats {
	var t nodeStats
	for _, n := range per {
		t.Open += n.Open
		t.Failed += n.Failed
		t.Dropped += n.Dropped
		t.Received += n.Received
	}
	return t
}

// opens is the streams open per node.
func opens(per []nodeStats) []int {
	out := make([]int, len(per))
	for k, n := range per {
		out[k] = n.Open
	}
	return out
}

// close asks every worker to close its streams and exit, then waits.
func (p pool) close() {
	var wg sync.WaitGroup
	for _, w := range p {
		wg.Go(func() {
			if w.enc != nil {
				_, _ = w.call(workerCmd{Op: "close"})
			}
			_ = w.in.Close()
			_ = w.cmd.Wait()
		})
	}
	wg.Wait()
}
