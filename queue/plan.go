package queue

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/skiffdb/skiff/consumer/change"
)

// Decoding rows written between a DDL and the next `skiff table add --refresh`.
//
// A capture trigger writes the row as record_out(NEW): its live columns, in attnum order, as
// the table has them when the row is written, under the layout id baked in when the trigger
// was made.
// After an ALTER TABLE that adds or drops columns and before the refresh, rows carry the old
// layout id with another set of fields. Attribute numbers name columns for good: a column
// keeps its number through RENAME and ALTER TYPE, a dropped column's number is never reused
// (its pg_attribute row stays, marked dropped), and an added column gets a number above every
// earlier one. So the columns added and dropped while a layout was in use are known from the
// layout's numbers and relnatts compared with those of the table's next layout (or, for the
// last one, of the catalog now):
//
//   - drops: columns of the layout that the next layout (the catalog) no longer has;
//   - births: numbers above the layout's relnatts, added in number order; some of them may
//     have been dropped again ("died").
//
// A row's fields are the layout's columns minus the drops made before it was written plus the
// births made before it, minus those dropped again. Its field count alone often leaves one
// choice (columns only added, or only dropped, and most mixes); when it does not (a drop and an
// add: same count, other columns), the order of the row's transaction and the DDL's decides.
// That order is known from the tick snapshots when they fall in different tick intervals:
// a writer holds its table lock until it commits and ALTER TABLE waits for it, so a row
// written before the DDL committed before the DDL's transaction did, and a row written after
// it committed after. The DDL's transaction is pg_attribute.xmin of the column's row: exact
// for a dropped column (nothing changes a dropped column's row any more), an upper bound for
// an added one (a later ALTER COLUMN rewrites the row). When the order is unknown (the row
// and the DDL committed between the same two ticks, a retried event, an xmin that cannot be
// widened to a txid) and more than one set of columns fits, the event is not decoded: the
// error names the table, the event and the remedies. Nothing is ever guessed.
//
// Values of columns that no longer exist (dropped since the row was written) are left out of
// the event, and columns carry their current names: a DBA who runs the same DDL on the target
// sees every row applied, whichever side was altered first.

// relCatalog is a table as pg_attribute shows it at the start of a batch.
type relCatalog struct {
	table change.Table
	natts int16
	// snapXmax is txid_snapshot_xmax of a snapshot taken when the catalog was read: every
	// transaction whose changes it shows has a txid below it.
	snapXmax int64
	atts     map[int16]catAtt // every column with attnum > 0, dropped ones included
	live     []int16          // the live columns' numbers, in order
}

// catAtt is one pg_attribute row.
type catAtt struct {
	name    string
	dropped bool
	xmin    int64 // the xid of the last transaction that changed the row, 32 bits
}

// colOp is a column added or dropped while a layout was in use.
type colOp struct {
	att int16
	// x is the txid of the transaction that last changed the column's pg_attribute row (the
	// drop's for a dropped column), 0 when unknown; pos is its place among the batch's ticks
	// (see tickPos), -1 when unknown.
	x    int64
	pos  int
	died bool // an added column dropped again
}

// plan is how the rows of one layout decode during one batch.
type plan struct {
	l *layout
	// s0 is the layout's columns' numbers; nil when unknown (an old layout).
	s0 []int16
	// base decodes rows of the layout's own columns, when no column was added or dropped since.
	base *shape
	// drops are the columns of s0 dropped since the layout was made, births the columns added
	// since, in number order.
	drops, births []colOp
	// names is the current name of each column; a column absent was dropped (its value is
	// left out of events).
	names map[int16]string
	// why says why only base rows decode (unknown history), "" otherwise.
	why string
	// ticks are the batch's tick snapshots, when some change can be placed among them.
	ticks  []change.Snapshot
	cache  map[[2]int]resolved // by row width and tick position
	shapes map[string]*shape   // by column numbers
}

type resolved struct {
	sh  *shape
	err error
}

// shape is the columns of a row of a given width.
type shape struct {
	width   int      // fields in the row
	keep    []int    // indexes of the fields kept, nil for all
	columns []string // names of the kept fields
	key     []string
}

// newPlan works out how rows of layout l decode, given the catalog of its table (nil when the
// table no longer exists) and the previous batch's plan (whose shapes it reuses when equal, so
// that events keep sharing column slices).
func newPlan(l *layout, cat *relCatalog, prev *plan) *plan {
	p := &plan{l: l, cache: map[[2]int]resolved{}, shapes: map[string]*shape{}}
	s0, n0 := l.attnums, l.natts
	if s0 == nil {
		s0, n0 = inferAttnums(l, cat)
	}
	// The end of the layout's time: the next layout of the table, else the catalog now.
	var s1 []int16
	var n1 int16
	switch {
	case l.next != nil:
		s1, n1 = l.next.attnums, l.next.natts
		if s1 == nil {
			s1, n1 = inferAttnums(l.next, cat)
		}
	case cat != nil:
		s1, n1 = cat.live, cat.natts
	}
	p.names = currentNames(l, cat)
	if s0 == nil || (s1 == nil && (l.next != nil || cat != nil)) {
		// An old layout (no column numbers) whose history cannot be told: rows of its own
		// width decode under its own columns only if nothing changed.
		p.why = fmt.Sprintf("layout %d was made before skiff recorded column numbers (provider schema version 4) and the columns of %s changed since in a way it cannot follow", l.id, l.table)
		if cat != nil && slices.Equal(liveNames(cat), l.columns) || cat == nil && l.next == nil {
			p.base = p.newShape(len(l.columns), nil, l.columns, l.key, prev)
		}
		return p
	}
	p.s0 = s0
	if s1 == nil {
		// The table was dropped, and this is its last layout: rows of the layout's width
		// decode under its columns (a table is seldom altered, not refreshed, written and
		// dropped), others cannot.
		p.why = fmt.Sprintf("%s no longer exists, so the columns it had after layout %d was made cannot be read", l.table, l.id)
	} else {
		for _, a := range s0 {
			if !slices.Contains(s1, a) {
				p.drops = append(p.drops, colOp{att: a, x: opXid(cat, a, l, true), pos: -1})
			}
		}
		for a := n0 + 1; a <= n1; a++ {
			died := !slices.Contains(s1, a)
			p.births = append(p.births, colOp{att: a, x: opXid(cat, a, l, died), pos: -1, died: died})
		}
	}
	if len(p.drops) == 0 && len(p.births) == 0 {
		sh, err := p.shapeOf(s0, prev)
		if err == nil {
			p.base = sh
		} else {
			p.why = err.Error()
		}
	}
	return p
}

// inferAttnums finds the column numbers and relnatts of a layout made before they were
// recorded, from the catalog, where that is certain: a table that never had a column dropped
// numbers its columns 1..n at every time; a table whose relnatts is the layout's width had
// exactly the layout's columns. Otherwise the catalog's first live columns must carry the
// layout's names, in order (columns added since come after them). nil when none applies.
func inferAttnums(l *layout, cat *relCatalog) ([]int16, int16) {
	if cat == nil {
		return nil, 0
	}
	k := len(l.columns)
	dropped := false
	for _, a := range cat.atts {
		dropped = dropped || a.dropped
	}
	if !dropped || int(cat.natts) == k {
		if int(cat.natts) < k {
			return nil, 0
		}
		out := make([]int16, k)
		for i := range out {
			out[i] = int16(i + 1)
		}
		return out, int16(k)
	}
	if len(cat.live) >= k && slices.Equal(liveNames(cat)[:k], l.columns) {
		out := slices.Clone(cat.live[:k])
		return out, out[k-1]
	}
	return nil, 0
}

func liveNames(cat *relCatalog) []string {
	out := make([]string, len(cat.live))
	for i, a := range cat.live {
		out[i] = cat.atts[a].name
	}
	return out
}

// currentNames maps column numbers to the names rows carry: the catalog's names of live
// columns; without a catalog (the table was dropped), the names of the table's last layout
// that has column numbers.
func currentNames(l *layout, cat *relCatalog) map[int16]string {
	names := map[int16]string{}
	if cat != nil {
		for _, a := range cat.live {
			names[a] = cat.atts[a].name
		}
		return names
	}
	last := l
	for last.next != nil {
		last = last.next
	}
	if last.attnums != nil {
		for i, a := range last.attnums {
			names[a] = last.columns[i]
		}
	}
	return names
}

// opXid is the txid of the transaction that last changed column a's pg_attribute row, 0 when
// it cannot be known for sure: no catalog, an old layout (no lower bound to widen the 32-bit
// xmin with), a frozen or special xid, or a dropped column expected but not found dropped.
// For a dropped column it is the drop's transaction; for an added one, an upper bound of the
// add's (the column may have been changed since).
func opXid(cat *relCatalog, a int16, l *layout, dropped bool) int64 {
	if cat == nil || l.createdXmin <= 0 {
		return 0
	}
	att, ok := cat.atts[a]
	if !ok || dropped && !att.dropped {
		return 0 // a dropped column stays dropped: the catalog is not the one expected
	}
	return widenXid(att.xmin, l.createdXmin, cat.snapXmax)
}

// widenXid turns a 32-bit xid into the txid it stands for, given that the txid is at least lo
// (the layout's created_xmin: the transaction changed the table after the layout was made)
// and below xmax (it has committed). 0 when that does not single one out.
func widenXid(xid int64, lo, xmax int64) int64 {
	if xid < 3 || lo <= 0 || xmax <= lo || xmax-lo >= 1<<32 {
		return 0
	}
	x := lo&^0xFFFFFFFF | xid
	if x < lo {
		x += 1 << 32
	}
	if x >= xmax {
		return 0
	}
	return x
}

// tickPos is the index of the first of the batch's tick snapshots (the previous tick's
// first) that shows txid x as committed, len(ticks) when none does. A batch's event has a
// position in 1..len(ticks)-1; a transaction with a smaller position committed before it.
func tickPos(ticks []change.Snapshot, x int64) int {
	for i := range ticks {
		if ticks[i].Visible(x) {
			return i
		}
	}
	return len(ticks)
}

// needsTicks says whether some column change of the plan can be placed among the ticks.
func (p *plan) needsTicks() bool {
	for _, op := range p.drops {
		if op.x != 0 {
			return true
		}
	}
	for _, op := range p.births {
		if op.x != 0 {
			return true
		}
	}
	return false
}

// placeOps sets the tick positions of the plan's column changes.
func (p *plan) placeOps(ticks []change.Snapshot) {
	for _, ops := range [][]colOp{p.drops, p.births} {
		for i := range ops {
			if ops[i].x != 0 {
				ops[i].pos = tickPos(ticks, ops[i].x)
			}
		}
	}
}

// order of a column change relative to a row's transaction.
type order int8

const (
	unknownOrder order = iota
	before             // the change committed before the row's transaction
	after              // the change committed after it
)

func (op colOp) order(posT int) order {
	switch {
	case posT < 0 || op.pos < 0 || op.pos == posT:
		return unknownOrder
	case op.pos < posT:
		return before
	}
	return after
}

// resolve returns the shape of a row of width n whose transaction has tick position posT
// (-1 when unknown), or the reason none can be told.
func (p *plan) resolve(n, posT int) (*shape, error) {
	if p.base != nil && n == p.base.width {
		return p.base, nil
	}
	k := [2]int{n, posT}
	if r, ok := p.cache[k]; ok {
		return r.sh, r.err
	}
	sh, err := p.resolveUncached(n, posT)
	p.cache[k] = resolved{sh, err}
	return sh, err
}

func (p *plan) resolveUncached(n, posT int) (*shape, error) {
	if p.s0 == nil {
		return nil, fmt.Errorf("row has %d fields: %s", n, p.why)
	}
	if len(p.drops) == 0 && len(p.births) == 0 {
		if p.why != "" {
			return nil, fmt.Errorf("row has %d fields: %s", n, p.why)
		}
		return nil, fmt.Errorf("row has %d fields, layout has %d columns, and no column of the table was added or dropped since the layout was made", n, len(p.l.columns))
	}
	var mustX, unkX []int16
	for _, op := range p.drops {
		switch op.order(posT) {
		case before:
			mustX = append(mustX, op.att)
		case unknownOrder:
			unkX = append(unkX, op.att)
		}
	}
	// Columns are added in number order: one known to exist when the row was written (its
	// row changed, or it was dropped again, before the row) means every earlier one existed.
	jmin := 0
	for i, op := range p.births {
		if op.order(posT) == before {
			jmin = i + 1
		}
	}
	var sets [][]int16
	ambiguous := false
	for j := jmin; j <= len(p.births) && !ambiguous; j++ {
		var mustY, unkY []int16
		for _, op := range p.births[:j] {
			if !op.died {
				continue
			}
			switch op.order(posT) {
			case before:
				mustY = append(mustY, op.att)
			case unknownOrder:
				unkY = append(unkY, op.att)
			}
		}
		have := len(p.s0) - len(mustX) + j - len(mustY)
		r, u := have-n, len(unkX)+len(unkY)
		if r < 0 || r > u {
			continue
		}
		if r != 0 && r != u {
			ambiguous = true // several choices of r among u columns
			break
		}
		drop := append(append([]int16{}, mustX...), mustY...)
		if r == u {
			drop = append(append(drop, unkX...), unkY...)
		}
		var set []int16
		for _, a := range p.s0 {
			if !slices.Contains(drop, a) {
				set = append(set, a)
			}
		}
		for _, op := range p.births[:j] {
			if !slices.Contains(drop, op.att) {
				set = append(set, op.att)
			}
		}
		if !slices.ContainsFunc(sets, func(s []int16) bool { return slices.Equal(s, set) }) {
			sets = append(sets, set)
		}
		ambiguous = len(sets) > 1
	}
	switch {
	case ambiguous:
		var alts []string
		for _, s := range sets {
			alts = append(alts, p.describe(s))
		}
		what := "several sets of columns"
		if len(alts) > 1 {
			what = strings.Join(alts, " or ")
		}
		return nil, fmt.Errorf("row has %d fields, written while columns of the table were added and dropped (%s) in the same tick interval as the row's transaction (or by it): it may hold %s",
			n, p.describeOps(), what)
	case len(sets) == 0:
		return nil, fmt.Errorf("row has %d fields, and no set of columns the table had since layout %d was made (%s) has that many", n, p.l.id, p.describeOps())
	}
	return p.shapeOf(sets[0], nil)
}

// shapeOf builds (or finds) the shape of rows holding the columns numbered atts.
func (p *plan) shapeOf(atts []int16, prev *plan) (*shape, error) {
	sig := fmt.Sprint(atts)
	if sh, ok := p.shapes[sig]; ok {
		return sh, nil
	}
	var keep []int
	var cols []string
	for i, a := range atts {
		if name, ok := p.names[a]; ok {
			keep = append(keep, i)
			cols = append(cols, name)
		}
	}
	if len(keep) == len(atts) {
		keep = nil
	}
	key := make([]string, len(p.l.key))
	for i, k := range p.l.key {
		j := slices.Index(p.l.columns, k)
		if j < 0 {
			return nil, fmt.Errorf("key column %s is not a column of layout %d", change.QuoteIdent(k), p.l.id)
		}
		a := p.s0[j]
		name, ok := p.names[a]
		if !ok || !slices.Contains(atts, a) {
			return nil, fmt.Errorf("key column %s of layout %d is no longer in the table: refresh its capture with the new key (`skiff table add --refresh --key ...`)",
				change.QuoteIdent(k), p.l.id)
		}
		key[i] = name
	}
	sh := p.newShape(len(atts), keep, cols, key, prev)
	p.shapes[sig] = sh
	return sh, nil
}

// newShape returns a shape, reusing prev's base when it is the same (events of consecutive
// batches then share column slices, which the applier compares by pointer first).
func (p *plan) newShape(width int, keep []int, cols, key []string, prev *plan) *shape {
	if prev != nil && prev.base != nil && prev.base.width == width && slices.Equal(prev.base.keep, keep) &&
		slices.Equal(prev.base.columns, cols) && slices.Equal(prev.base.key, key) {
		return prev.base
	}
	return &shape{width: width, keep: keep, columns: cols, key: key}
}

// describe names a set of columns for a message: current names; dropped ones by the name the
// layout knew, or by number.
func (p *plan) describe(atts []int16) string {
	parts := make([]string, len(atts))
	for i, a := range atts {
		name, ok := p.names[a]
		switch j := slices.Index(p.s0, a); {
		case ok:
			parts[i] = change.QuoteIdent(name)
		case j >= 0:
			parts[i] = change.QuoteIdent(p.l.columns[j]) + " (dropped since)"
		default:
			parts[i] = "column " + strconv.Itoa(int(a)) + " (added and dropped since)"
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// describeOps lists the plan's column changes for a message.
func (p *plan) describeOps() string {
	var parts []string
	for _, op := range p.drops {
		parts = append(parts, "dropped "+p.l.columns[slices.Index(p.s0, op.att)])
	}
	for _, op := range p.births {
		name, ok := p.names[op.att]
		switch {
		case op.died:
			parts = append(parts, "added and dropped column "+strconv.Itoa(int(op.att)))
		case ok:
			parts = append(parts, "added "+name)
		default:
			parts = append(parts, "added column "+strconv.Itoa(int(op.att)))
		}
	}
	return strings.Join(parts, ", ")
}
