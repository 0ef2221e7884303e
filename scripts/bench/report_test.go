package main

import (
	"encoding/xml"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func testBench() *bench {
	return &bench{
		cfg:      config{Size: sizes["quick"], SkiffBin: "/nonexistent/skiff", Command: "make bench BENCH_SIZE=quick"},
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		disabled: map[string]string{},
	}
}

func TestReportRatiosAndSpread(t *testing.T) {
	t.Parallel()
	b := testBench()
	for i, v := range []float64{100, 120, 110} {
		b.record("apply", "apply, 100k inserts", "skiff", "rows/s", false, v)
		b.record("apply", "apply, 100k inserts", "builtin", "rows/s", false, []float64{50, 40, 55}[i])
		b.record("lag", "lag p99", "skiff", "ms", true, []float64{500, 400, 600}[i])
		b.record("lag", "lag p99", "londiste", "ms", true, []float64{3000, 3500, 2000}[i])
	}
	r := b.report("benchmarks.svg")
	// 110 / 50 = 2.2; paired ratios 2, 3, 2 → spread 2.00–3.00.
	require.Contains(t, r, "| apply, 100k inserts | 110 rows/s | | 2.20× (2.00–3.00) |")
	require.Contains(t, r, "| apply, 100k inserts | built-in logical replication | 50.0 | 40.0 – 55.0 | rows/s | 2.20× (2.00–3.00) |")
	// Lag: 500 / 3000.
	require.Contains(t, r, "0.167×")
	require.Contains(t, r, "Quick size")
	require.Contains(t, r, "![skiff ÷ peers, log scale](benchmarks.svg)")

	svg := b.svg()
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Contains(t, svg, "apply, 100k inserts — vs built-in")
}

func TestReportSkiffNotAvailable(t *testing.T) {
	t.Parallel()
	b := testBench()
	b.unavailable("apply", "apply, 100k inserts", "skiff", "rows/s", false, "skiff worker: not implemented yet")
	b.record("apply", "apply, 100k inserts", "londiste", "rows/s", false, 20000)
	r := b.report("")
	require.Contains(t, r, "skiff: not available (skiff worker: not implemented yet)")
	require.Contains(t, r, "| 20,000 | 20,000 – 20,000 | rows/s | – (skiff not measured) |")
	require.NotContains(t, r, "![")
	require.Empty(t, b.svg())
}

func TestRotate(t *testing.T) {
	t.Parallel()
	xs := []string{"a", "b", "c"}
	require.Equal(t, []string{"a", "b", "c"}, rotate(xs, 0))
	require.Equal(t, []string{"b", "c", "a"}, rotate(xs, 1))
	require.Equal(t, []string{"a", "b", "c"}, rotate(xs, 3))
	require.Equal(t, []string{"a", "b", "c"}, xs)
}

func TestReportWALPerChange(t *testing.T) {
	t.Parallel()
	b := testBench()
	name := walName("apply, 100,000 inserts")
	require.Equal(t, "provider WAL per change, 100,000 inserts", name)
	b.record("apply", name, "skiff", "bytes/change", true, 300)
	b.record("apply", name, "skiff-logical", "bytes/change", true, 150)
	r := b.report("")
	// In the summary (lower is better: skiff writes twice what the logical source does).
	require.Contains(t, r, "| provider WAL per change, 100,000 inserts | 300 bytes/change | 2.00× |  |")
	require.Equal(t, "", aim("apply", walName("apply, 50,000 inserts + 50,000 updates")), "the apply rate's aim is not the WAL's")
	require.Contains(t, r, "| provider WAL per change, 100,000 inserts | skiff, logical-decoding source (pgoutput) | 150 | 150 – 150 | bytes/change | 2.00× |")
}
