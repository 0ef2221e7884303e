package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// kthreadd is the parent of the kernel's threads.
const kthreadd = 2

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux architecture Go
// runs the bench on.
const clockTicks = 100

// cpuSample is where the machine's and two clusters' CPU time stood at one moment.
type cpuSample struct {
	busy, idle float64 // the machine: seconds of all cores, from /proc/stat
	kernel     float64 // kernel threads (writeback, journal): kthreadd's children
	clusters   []float64
}

// sampleCPU reads the machine's CPU time and each cluster's: its postmaster's own and
// its reaped children's, plus its live children's (backends, background processes).
func sampleCPU(servers ...*pgtest.Server) (cpuSample, error) {
	var s cpuSample
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return s, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/stat: %w", err)
		}
		switch i {
		case 3, 4: // idle, iowait
			s.idle += n / clockTicks
		case 8, 9: // guest time is already counted in user
		default:
			s.busy += n / clockTicks
		}
	}
	procs, err := readProcs()
	if err != nil {
		return s, err
	}
	for _, p := range procs {
		if p.ppid == kthreadd {
			s.kernel += p.self
		}
	}
	for _, srv := range servers {
		pm, err := postmasterPID(srv)
		if err != nil {
			return s, err
		}
		var t float64
		for _, p := range procs {
			switch {
			case p.pid == pm:
				t += p.self + p.children
			case p.ppid == pm:
				t += p.self
			}
		}
		s.clusters = append(s.clusters, t)
	}
	return s, nil
}

type procTimes struct {
	pid, ppid      int
	self, children float64 // seconds: utime+stime, cutime+cstime
}

func readProcs() ([]procTimes, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []procTimes
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		if p, ok := parseStat(pid, b); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// parseStat reads the parent and CPU times of /proc/<pid>/stat. The command name, in
// parentheses, may hold spaces and parentheses: the fields start after the last ')'. Then come
// state, ppid, … utime (field 14), stime, cutime, cstime.
func parseStat(pid int, b []byte) (procTimes, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procTimes{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procTimes{}, false
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k-3], 64); return v / clockTicks }
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procTimes{}, false
	}
	return procTimes{pid: pid, ppid: ppid, self: num(14) + num(15), children: num(16) + num(17)}, true
}

func postmasterPID(srv *pgtest.Server) (int, error) {
	b, err := os.ReadFile(filepath.Join(srv.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid of %s: %w", srv.DataDir(), err)
	}
	return pid, nil
}

// cpuUse is what was used between two samples, in cores (CPU seconds per second of wall time).
type cpuUse struct {
	busy     float64 // the machine's cores busy, from 0 to its number of cores
	kernel   float64
	clusters []float64
}

// rest is what neither cluster nor a kernel thread used: the replicator's processes, the
// bench's own.
func (u cpuUse) rest() float64 {
	r := u.busy - u.kernel
	for _, c := range u.clusters {
		r -= c
	}
	return r
}

// useSince is what was used since before, which sampleCPU(servers...) returned with beforeErr.
func useSince(before cpuSample, beforeErr error, servers ...*pgtest.Server) (cpuUse, error) {
	if beforeErr != nil {
		return cpuUse{}, beforeErr
	}
	after, err := sampleCPU(servers...)
	if err != nil {
		return cpuUse{}, err
	}
	return before.until(after), nil
}

func (a cpuSample) until(b cpuSample) cpuUse {
	total := (b.busy - a.busy) + (b.idle - a.idle)
	var u cpuUse
	if total <= 0 {
		return u
	}
	cores := float64(runtime.NumCPU())
	wall := total / cores
	u.busy = (b.busy - a.busy) / wall
	u.kernel = (b.kernel - a.kernel) / wall
	for i := range a.clusters {
		u.clusters = append(u.clusters, (b.clusters[i]-a.clusters[i])/wall)
	}
	return u
}
