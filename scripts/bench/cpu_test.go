package main

import (
	"runtime"
	"testing"
)

func TestParseStat(t *testing.T) {
	// A command name with a space and a parenthesis, as a process may set it.
	line := "4242 (postgres: x) y) S 4000 4242 4242 0 -1 4194560 100 0 0 0 250 75 12 8 20 0 1 0 100 0 0\n"
	p, ok := parseStat(4242, []byte(line))
	if !ok {
		t.Fatal("not parsed")
	}
	if p.ppid != 4000 || p.self != 3.25 || p.children != 0.2 {
		t.Fatalf("got ppid %d self %v children %v, want 4000 3.25 0.2", p.ppid, p.self, p.children)
	}
	if _, ok := parseStat(1, []byte("1 (init")); ok {
		t.Fatal("a truncated line parsed")
	}
}

func TestCPUUse(t *testing.T) {
	a := cpuSample{busy: 10, idle: 10, kernel: 1, clusters: []float64{2, 3}}
	b := cpuSample{busy: 10 + 3, idle: 10 + 1, kernel: 1.2, clusters: []float64{2.5, 4.5}}
	u := a.until(b)
	// 4 s of all cores: 2 s of wall time on 2 cores, 4/2 on 1 core.
	wall := 4 / float64(runtime.NumCPU())
	if got, want := u.busy, 3/wall; got != want {
		t.Fatalf("busy %v, want %v", got, want)
	}
	if got, want := u.rest(), (3-0.2-0.5-1.5)/wall; got < want-1e-9 || got > want+1e-9 {
		t.Fatalf("rest %v, want %v", got, want)
	}
}
