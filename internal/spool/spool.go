// Package spool keeps a sequence of change events for replay, for a source that cannot read a
// batch twice (logical decoding): the events stay in memory up to a bound and go to a
// temporary file beyond it, and can be read back, in order, any number of times.
package spool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// Spool is an append-only sequence of events, replayable until Reset. Events of one layout
// (Columns, Key) share their slices when read back, as a source's events do.
// A Spool is not safe for concurrent use.
//
// The events kept in memory are encoded as in the file, in one byte slice: the garbage
// collector never scans it. Kept as events, the strings of a 64 MiB batch were scanned at every
// collection while more were decoded: on a 2 M-change transaction from a logical slot a third
// of the worker's CPU went to the collector.
type Spool struct {
	dir      string
	memLimit int

	mem  []byte // the first memN events, encoded (encode)
	memN int

	file    *os.File
	w       *bufio.Writer
	fileN   int
	scratch []byte

	layouts  [][]string
	layoutOf map[string]int
	// layoutAt finds a layout by the slice itself: events of one layout share it, so the
	// text key (a string built per call) is made once per slice, not per event.
	layoutAt map[layoutRef]int
	tables   []change.Table
	tableOf  map[change.Table]int
}

// New returns an empty spool that keeps about memBytes of events in memory and writes the
// rest to a temporary file in dir ("" = os.TempDir()), made on first need.
func New(dir string, memBytes int) *Spool {
	return &Spool{dir: dir, memLimit: memBytes, layoutOf: map[string]int{}, layoutAt: map[layoutRef]int{},
		tableOf: map[change.Table]int{}}
}

// Len is the number of events appended since the last Reset.
func (s *Spool) Len() int { return s.memN + s.fileN }

// Spilled reports whether some events are in the temporary file.
func (s *Spool) Spilled() bool { return s.fileN > 0 }

// MemBytes is the size of the events held in memory (encoded).
func (s *Spool) MemBytes() int { return len(s.mem) }

// keepCap is the most memory an emptied spool keeps for its next events.
const keepCap = 4 << 20

// Append adds an event at the end; the spool keeps a copy (ev's Values and OldKey may be
// modified afterwards). Columns and Key are change.Event's shared layout slices: they must not
// be modified, as the spool knows a layout again by its slice.
func (s *Spool) Append(ev change.Event) error {
	if ev.Exec != nil {
		return fmt.Errorf("spool: event %d: an Execute event cannot be kept", ev.ID)
	}
	s.scratch = s.encode(s.scratch[:0], &ev)
	if s.fileN == 0 && len(s.mem)+len(s.scratch) <= s.memLimit {
		if cap(s.mem)-len(s.mem) < len(s.scratch) {
			// Grow by doubling, never past the bound.
			c := min(max(2*cap(s.mem), len(s.mem)+len(s.scratch), 64<<10), s.memLimit)
			grown := make([]byte, len(s.mem), c)
			copy(grown, s.mem)
			s.mem = grown
		}
		s.mem = append(s.mem, s.scratch...)
		s.memN++
		return nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "skiff-spool-*")
		if err != nil {
			return fmt.Errorf("spool: create temporary file: %w", err)
		}
		// The file is needed only through f: remove its name at once where the system allows.
		_ = os.Remove(f.Name())
		s.file = f
		s.w = bufio.NewWriterSize(f, 256<<10)
	}
	if _, err := s.w.Write(s.scratch); err != nil {
		return fmt.Errorf("spool: write temporary file: %w", err)
	}
	s.fileN++
	return nil
}

// layoutRef is a layout slice's identity: its first element and its length.
type layoutRef struct {
	first *string
	n     int
}

// layout returns the number a layout is written as (0: nil), numbering new ones.
func (s *Spool) layout(cols []string) int {
	if cols == nil {
		return 0
	}
	var ref layoutRef
	if len(cols) > 0 {
		ref = layoutRef{&cols[0], len(cols)}
		if i, ok := s.layoutAt[ref]; ok {
			return i
		}
	}
	k := strings.Join(cols, "\x00") + fmt.Sprint(len(cols))
	i, ok := s.layoutOf[k]
	if !ok {
		s.layouts = append(s.layouts, cols)
		i = len(s.layouts) - 1
		s.layoutOf[k] = i
	}
	if ref.first != nil {
		s.layoutAt[ref] = i + 1
	}
	return i + 1
}

func (s *Spool) table(t change.Table) int {
	if i, ok := s.tableOf[t]; ok {
		return i
	}
	s.tables = append(s.tables, t)
	s.tableOf[t] = len(s.tables) - 1
	return len(s.tables) - 1
}

func appendValues(b []byte, vs []change.Value) []byte {
	if vs == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(vs))+1)
	for _, v := range vs {
		if !v.Valid {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(v.Text)))
		b = append(b, v.Text...)
	}
	return b
}

// encode writes one event as a length-prefixed record.
func (s *Spool) encode(b []byte, ev *change.Event) []byte {
	b = append(b, 0, 0, 0, 0) // record length, filled in below
	b = binary.AppendVarint(b, ev.ID)
	b = binary.AppendVarint(b, ev.TxID)
	b = append(b, byte(ev.Op))
	b = binary.AppendUvarint(b, uint64(s.table(ev.Table)))
	b = binary.AppendUvarint(b, uint64(s.layout(ev.Columns)))
	b = binary.AppendUvarint(b, uint64(s.layout(ev.Key)))
	b = appendValues(b, ev.Values)
	b = appendValues(b, ev.OldKey)
	if ev.Err != nil {
		msg := ev.Err.Error()
		b = binary.AppendUvarint(b, uint64(len(msg))+1)
		b = append(b, msg...)
	} else {
		b = binary.AppendUvarint(b, 0)
	}
	binary.BigEndian.PutUint32(b[:4], uint32(len(b)-4))
	return b
}

var errCorrupt = errors.New("spool: temporary file is corrupt")

type decoder struct {
	b []byte
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		panic(errCorrupt)
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		panic(errCorrupt)
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) string {
	if uint64(len(d.b)) < n {
		panic(errCorrupt)
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) values() []change.Value {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	vs := make([]change.Value, n-1)
	for i := range vs {
		if len(d.b) == 0 {
			panic(errCorrupt)
		}
		valid := d.b[0]
		d.b = d.b[1:]
		if valid == 1 {
			vs[i] = change.Text(d.bytes(d.uvarint()))
		}
	}
	return vs
}

func (s *Spool) decode(rec []byte) (ev change.Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok && errors.Is(e, errCorrupt) {
				err = e
				return
			}
			panic(r)
		}
	}()
	d := decoder{b: rec}
	ev.ID = d.varint()
	ev.TxID = d.varint()
	if len(d.b) == 0 {
		return ev, errCorrupt
	}
	ev.Op = change.Op(d.b[0])
	d.b = d.b[1:]
	ti := d.uvarint()
	if ti >= uint64(len(s.tables)) {
		return ev, errCorrupt
	}
	ev.Table = s.tables[ti]
	lay := func() []string {
		i := d.uvarint()
		if i == 0 {
			return nil
		}
		if i > uint64(len(s.layouts)) {
			panic(errCorrupt)
		}
		return s.layouts[i-1]
	}
	ev.Columns = lay()
	ev.Key = lay()
	ev.Values = d.values()
	ev.OldKey = d.values()
	if n := d.uvarint(); n > 0 {
		ev.Err = errors.New(d.bytes(n - 1))
	}
	return ev, nil
}

// Read hands the events to fn in order, up to chunk at a time. The slice is reused after fn
// returns; the events' Values and OldKey are fresh for each Read (fn may modify them) and
// their Columns and Key are shared (fn must not modify them). Read may be called any number
// of times; Append must not be called while it runs.
func (s *Spool) Read(ctx context.Context, chunk int, fn func([]change.Event) error) error {
	if chunk <= 0 {
		chunk = 1000
	}
	buf := make([]change.Event, 0, min(chunk, s.Len()))
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := fn(buf)
		buf = buf[:0]
		return err
	}
	add := func(ev change.Event) error {
		buf = append(buf, ev)
		if len(buf) == chunk {
			return flush()
		}
		return nil
	}
	if err := s.records(bytes.NewReader(s.mem), s.memN, 0, add); err != nil {
		return err
	}
	if s.fileN > 0 {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("spool: write temporary file: %w", err)
		}
		end, err := s.file.Seek(0, io.SeekCurrent)
		if err != nil {
			return fmt.Errorf("spool: temporary file: %w", err)
		}
		r := bufio.NewReaderSize(io.NewSectionReader(s.file, 0, end), 256<<10)
		if err := s.records(r, s.fileN, s.memN, add); err != nil {
			return err
		}
	}
	return flush()
}

// records reads n records (encode) from r and hands their events to add; first is the first
// one's number in the spool, for errors.
func (s *Spool) records(r io.Reader, n, first int, add func(change.Event) error) error {
	var hdr [4]byte
	var rec []byte
	for i := range n {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("spool: event %d: %w (%w)", first+i, errCorrupt, err)
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if cap(rec) < int(size) {
			rec = make([]byte, size)
		}
		rec = rec[:size]
		if _, err := io.ReadFull(r, rec); err != nil {
			return fmt.Errorf("spool: event %d: %w (%w)", first+i, errCorrupt, err)
		}
		ev, err := s.decode(rec)
		if err != nil {
			return fmt.Errorf("spool: event %d: %w", first+i, err)
		}
		if err := add(ev); err != nil {
			return err
		}
	}
	return nil
}

// Reset empties the spool (its temporary file is closed and gone).
func (s *Spool) Reset() error {
	s.mem, s.memN = s.mem[:0], 0
	if cap(s.mem) > keepCap {
		s.mem = nil
	}
	s.fileN = 0
	s.layouts = nil
	clear(s.layoutOf)
	clear(s.layoutAt)
	s.tables = nil
	clear(s.tableOf)
	return s.closeFile()
}

func (s *Spool) closeFile() error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file, s.w = nil, nil
	if err != nil {
		return fmt.Errorf("spool: close temporary file: %w", err)
	}
	return nil
}

// Close releases the spool's temporary file; the spool is empty afterwards.
func (s *Spool) Close() error { return s.Reset() }
