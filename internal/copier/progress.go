package copier

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"
)

// progress renders the copy's progress: a block of lines redrawn in place on a terminal
// (Config.Display), or log lines every Config.LogEvery. A compact renderer of our own: a
// progress-bar library would bring a dependency and its own goroutines and terminal handling
// for what is one line per table.
type progress struct {
	tables []*tableProgress
}

func newProgress(tables []Table) *progress {
	p := &progress{}
	for _, t := range tables {
		p.tables = append(p.tables, &tableProgress{name: t.String()})
	}
	return p
}

// run starts the display or the log ticker and returns the function that stops it (after a
// final render).
func (p *progress) run(ctx context.Context, cfg Config) func() {
	every := cfg.LogEvery
	if cfg.Display != nil {
		every = 500 * time.Millisecond
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	lines := 0
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if cfg.Display != nil {
					lines = p.draw(cfg.Display, lines)
				}
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if cfg.Display != nil {
					lines = p.draw(cfg.Display, lines)
					continue
				}
				for _, tp := range p.tables {
					if tp.started.Load() == 0 || tp.isDone() {
						continue
					}
					rows, bytes, rate, mbs, eta := tp.figures()
					args := []any{"table", tp.name, "rows", rows, "bytes", bytes,
						"rows_per_s", int64(rate), "mb_per_s", math.Round(mbs*10) / 10}
					if eta > 0 {
						args = append(args, "eta", eta)
					}
					if n := tp.ranges.Load(); n > 0 {
						args = append(args, "ranges_done", tp.rangesDone.Load(), "ranges", n)
					}
					cfg.Log.Info("copy progress", args...)
				}
			}
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
	}
}

func (tp *tableProgress) isDone() bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.done
}

// figures returns rows, bytes, rows/s, MB/s and the ETA ("" when unknown).
func (tp *tableProgress) figures() (int64, int64, float64, float64, time.Duration) {
	rows, bytes := tp.rows.Load(), tp.bytes.Load()
	s := tp.started.Load()
	if s == 0 {
		return rows, bytes, 0, 0, 0
	}
	tp.mu.Lock()
	el := tp.elapsed
	done := tp.done
	tp.mu.Unlock()
	if !done {
		el = time.Since(time.Unix(0, s))
	}
	secs := el.Seconds()
	if secs <= 0 {
		return rows, bytes, 0, 0, 0
	}
	rate := float64(rows) / secs
	var eta time.Duration // 0: unknown
	if est := tp.estimate.Load(); !done && est > rows && rate > 0 {
		left := time.Duration(float64(est-rows) / rate * float64(time.Second))
		if left > 10*time.Second {
			left = left.Round(time.Second)
		} else {
			left = left.Round(100 * time.Millisecond)
		}
		eta = left
	}
	return rows, bytes, rate, float64(bytes) / secs / 1e6, eta
}

// draw redraws the block of table lines; prev is how many lines the last draw wrote.
func (p *progress) draw(w io.Writer, prev int) int {
	var b strings.Builder
	if prev > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", prev) // back to the block's first line
	}
	for _, tp := range p.tables {
		rows, bytes, rate, mbs, eta := tp.figures()
		tp.mu.Lock()
		done, err := tp.done, tp.err
		tp.mu.Unlock()
		state := "waiting"
		switch {
		case err != nil:
			state = "FAILED"
		case done:
			state = "done"
		case tp.started.Load() != 0:
			state = "copying"
		}
		pct := ""
		if est := tp.estimate.Load(); est > 0 && !done {
			pct = fmt.Sprintf("%3.0f%%", min(float64(rows)/float64(est)*100, 99))
		}
		etaText := ""
		if eta > 0 {
			etaText = "ETA " + eta.String()
		}
		if n := tp.ranges.Load(); n > 0 {
			etaText = fmt.Sprintf("%-12s ranges %d/%d", etaText, tp.rangesDone.Load(), n)
		}
		fmt.Fprintf(&b, "\x1b[2K%-40s %-8s %4s %12d rows %9.1f MB %9.0f rows/s %7.1f MB/s %s\n",
			trim(tp.name, 40), state, pct, rows, float64(bytes)/1e6, rate, mbs, etaText)
	}
	_, _ = io.WriteString(w, b.String())
	return len(p.tables)
}

func trim(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
