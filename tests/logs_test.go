package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer"
	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/apply"
	"github.com/skiffdb/skiff/internal/pgtest"
	"github.com/skiffdb/skiff/queue"
)

// goDuration is a duration as Go writes it (1.5s, 250ms, 1m0s): JSON logs give seconds.
var goDuration = regexp.MustCompile(`^-?[0-9.]+(ns|µs|us|ms|s|m|h)([0-9.]+(ns|µs|us|ms|s|m|h))*$`)

// repeatedPrefix finds an error chain that says the same thing twice in a row
// ("finish batch 96: finish batch 96: ...").
var repeatedPrefix = regexp.MustCompile(`(?:^|: )([^:]{6,}): ([^:]{6,}): `)

// checkJSONLogs checks every JSON log line of a process: an object whose keys appear once
// (at every level), durations as seconds (numbers under keys ending in _s, no Go duration
// strings), and no message or error repeating a prefix. It returns the lines, decoded.
func checkJSONLogs(t *testing.T, what, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		require.NoError(t, uniqueKeys(json.NewDecoder(strings.NewReader(line))), "%s: %s", what, line)
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "%s: %s", what, line)
		for k, v := range m {
			if s, ok := v.(string); ok {
				require.False(t, goDuration.MatchString(s), "%s: %s=%q is a duration as text: %s", what, k, s, line)
				if r := repeatedPrefix.FindStringSubmatch(s); r != nil && r[1] == r[2] {
					t.Errorf("%s: %s repeats %q: %s", what, k, r[1], line)
				}
			}
			if strings.HasSuffix(k, "_s") {
				_, isNum := v.(float64)
				require.True(t, isNum, "%s: %s is not a number: %s", what, k, line)
			}
		}
		lines = append(lines, m)
	}
	return lines
}

// uniqueKeys reads one JSON value and fails when an object holds a key twice.
func uniqueKeys(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key := k.(string)
			if seen[key] {
				return fmt.Errorf("key %q repeated", key)
			}
			seen[key] = true
			if err := uniqueKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		for dec.More() {
			if err := uniqueKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	}
	return nil
}

// TestLogsSayThingsOnce runs the ticker and the worker as processes at debug level with JSON
// logs while rows are written, and checks every line they log: no key twice, durations in
// seconds, no repeated prefix in a message.
func TestLogsSayThingsOnce(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	p.capture(t, "ql", "t")
	out, err := skiff(t, "subscribe", "--provider", p.prov, "--target", p.tgt, "--queue", "ql", "--consumer", "c1")
	require.NoError(t, err, out)
	ticker := startProc(t, "--log-level", "debug", "ticker", "--db", p.prov, "--poll", "20ms")
	worker := startProc(t, "--log-level", "debug", "worker", "--provider", p.prov, "--target", p.tgt, "--queue", "ql",
		"--consumer", "c1", "--min-backoff", "100ms")
	prov := connect(t, p.prov)
	for i := range 20 {
		exec1(t, prov, `INSERT INTO t VALUES ($1, 'v')`, i)
	}
	p.caughtUp(t, time.Minute, "ql")
	p.compare(t, "t")
	pgtest.Eventually(t, 30*time.Second, "the worker logs a batch", func() bool {
		return strings.Contains(worker.String(), `"msg":"batch applied"`)
	})
	for what, proc := range map[string]*procOut{"ticker": ticker, "worker": worker} {
		lines := checkJSONLogs(t, what, proc.String())
		require.NotEmpty(t, lines, what)
	}
}

// finishFails is the trigger-queue Source whose connection is terminated once a batch's
// events are read: the batch commits on the target, its Finish fails.
type finishFails struct {
	*queue.Source
	kill func()
	once sync.Once
}

func (s *finishFails) Events(ctx context.Context, b change.Batch, fn func([]change.Event) error) error {
	err := s.Source.Events(ctx, b, fn)
	s.once.Do(s.kill)
	return err
}

// TestFinishErrorNamesBatchOnce: a batch whose Finish fails is reported with the batch named
// once ("finish batch N: ..."), in the error recorded on the target.
func TestFinishErrorNamesBatchOnce(t *testing.T) {
	t.Parallel()
	p := newPair(t, "", "", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	p.capture(t, "qf", "t")
	p.subscribeDirect(t, "qf")
	ctx := context.Background()
	prov, tgt, admin, check := connect(t, p.prov), connect(t, p.tgt), connect(t, p.prov), connect(t, p.tgt)
	exec1(t, admin, `INSERT INTO t VALUES (1, 'a')`)
	_, err := queue.ForceTick(ctx, admin, "qf")
	require.NoError(t, err)

	a, err := apply.Open(ctx, tgt, apply.Config{Queue: "qf", Consumer: "c1"})
	require.NoError(t, err)
	qs, err := queue.NewSource(ctx, prov, queue.SourceConfig{Queue: "qf", Consumer: "c1"})
	require.NoError(t, err)
	pid := prov.PgConn().PID()
	src := &finishFails{Source: qs, kill: func() {
		_, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid))
		require.NoError(t, err)
	}}
	w, err := consumer.NewWorker(consumer.Config{Name: "qf", Source: src, Applier: a, Handlers: builtin, MinBackoff: time.Hour})
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	defer w.Stop()

	var lastErr string
	pgtest.Eventually(t, 30*time.Second, "the failed finish recorded", func() bool {
		var e *string
		require.NoError(t, check.QueryRow(ctx, `SELECT last_error FROM skiff.subscription WHERE queue = 'qf'`).Scan(&e))
		if e != nil {
			lastErr = *e
		}
		return e != nil
	})
	require.Regexp(t, `^finish batch \d+: `, lastErr)
	require.Equal(t, 1, strings.Count(lastErr, "finish batch"), lastErr)
	p.compare(t, "t")
}
