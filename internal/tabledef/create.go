package tabledef

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/internal/pg"
)

// Spec is a table to create on the target: a provider table in the shape its handlers give
// its rows (`subscribe --table SRC:DEST`, the `columns` handler's renames and exclusions).
type Spec struct {
	Source, Dest change.Table
	// Columns are the destination's columns in order, each with the source column whose
	// values it receives.
	Columns []Mapped
}

// Mapped is a destination column and the source column it receives ("" when a handler
// computes its value: its type is unknown, and the table cannot be created).
type Mapped struct {
	Name, Source string
}

// IndexStatement is an index created after the initial copy.
type IndexStatement struct {
	Table change.Table
	Index string // the provider's index
	SQL   string
}

// Plan is what creating missing tables on a target takes: statements run in one target
// transaction (Create), then indexes (CreateIndexes) once the tables hold their rows.
type Plan struct {
	// Tables, Sequences, Types and Schemas are what Create makes.
	Tables, Sequences, Types []change.Table
	Schemas                  []string
	// Indexes are made by CreateIndexes.
	Indexes []IndexStatement
	// Warnings say what is left out (a default calling a function the target lacks, an index
	// over a column a handler renames), one sentence each.
	Warnings []string

	schemas, types, sequences, tables, owned []string
}

// Statements returns the statements Create runs, in order.
func (p *Plan) Statements() []string {
	var out []string
	for _, s := range [][]string{p.schemas, p.types, p.sequences, p.tables, p.owned} {
		out = append(out, s...)
	}
	return out
}

// Create runs the plan's statements in one transaction of the target, each sent alone.
func (p *Plan) Create(ctx context.Context, tgt *pgx.Conn) error {
	return pgx.BeginFunc(ctx, tgt, func(tx pgx.Tx) error {
		for _, s := range p.Statements() {
			if _, err := pg.Exec(ctx, tx.Conn().PgConn(), s); err != nil {
				return fmt.Errorf("target: %s: %w", s, err)
			}
		}
		return nil
	})
}

// CreateIndexes creates the indexes of the tables Create made, each in its own statement; an
// index that fails does not keep the others from being made. The error names each failure
// and its SQL.
func (p *Plan) CreateIndexes(ctx context.Context, tgt *pgx.Conn) error {
	var errs []error
	for _, ix := range p.Indexes {
		if _, err := pg.Exec(ctx, tgt.PgConn(), ix.SQL); err != nil {
			errs = append(errs, fmt.Errorf("target: index %s of table %s (%s): %w", change.QuoteIdent(ix.Index), ix.Table, ix.SQL, err))
		}
	}
	return errors.Join(errs...)
}

// builder makes a Plan.
type builder struct {
	prov                    pgx.Tx
	tgt                     *pgx.Conn
	provVersion, tgtVersion int
	plan                    *Plan
	seenTypes               map[uint32]bool
	seenSchemas             map[string]bool
	names                   map[change.Table]bool // relation names taken on the target (planned or found)
	seqs                    map[change.Table]*Sequence
	identityInColumn        map[change.Table]bool // sequences an identity column makes
	problems                []string
}

// NewPlan plans the creation of the tables of specs (which must not exist on the target) and
// of the sequences among sequences that the target lacks, reading the provider prov and the
// target tgt. Types the tables' columns use that the target lacks are created when they are
// enums or domains; any other is a problem. The error lists every problem, naming table,
// column and type.
func NewPlan(ctx context.Context, prov, tgt *pgx.Conn, specs []Spec, sequences []change.Table) (*Plan, error) {
	b := &builder{
		tgt: tgt, provVersion: pg.ServerVersion(prov), tgtVersion: pg.ServerVersion(tgt), plan: &Plan{},
		seenTypes: map[uint32]bool{}, seenSchemas: map[string]bool{}, names: map[change.Table]bool{},
		seqs: map[change.Table]*Sequence{}, identityInColumn: map[change.Table]bool{},
	}
	err := catalogTx(ctx, prov, func(tx pgx.Tx) error {
		b.prov = tx
		for _, s := range sequences {
			if err := b.readSequence(ctx, s); err != nil {
				return err
			}
		}
		for _, s := range specs {
			if err := b.table(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(b.problems) > 0 {
		return nil, fmt.Errorf("--create-tables cannot create every table:\n  %s", strings.Join(b.problems, "\n  "))
	}
	// Sequences not made by an identity column, before the tables whose defaults call them.
	for _, s := range sequences {
		sq := b.seqs[s]
		if sq == nil || b.identityInColumn[s] {
			continue
		}
		if err := b.schema(ctx, s.Schema); err != nil {
			return nil, err
		}
		b.plan.sequences = append(b.plan.sequences, "CREATE SEQUENCE "+s.String()+b.seqOptions(sq, true))
		b.plan.Sequences = append(b.plan.Sequences, s)
	}
	return b.plan, nil
}

// readSequence reads a sequence the target lacks (nothing when it has it).
func (b *builder) readSequence(ctx context.Context, s change.Table) error {
	if _, ok := b.seqs[s]; ok {
		return nil
	}
	exists, err := b.relationExists(ctx, s)
	if err != nil || exists {
		return err
	}
	sq, err := readSequence(ctx, b.prov, b.provVersion, s)
	if err != nil {
		return err
	}
	b.seqs[s] = sq
	b.names[s] = true
	return nil
}

// seqOptions are a sequence's parameters for CREATE SEQUENCE, or, typed false, for an identity
// column (whose sequence takes the column's type).
func (b *builder) seqOptions(s *Sequence, typed bool) string {
	var o strings.Builder
	if typed && s.Type != "" && b.tgtVersion >= 100000 {
		o.WriteString(" AS " + s.Type)
	}
	fmt.Fprintf(&o, " INCREMENT BY %d MINVALUE %d MAXVALUE %d START WITH %d CACHE %d", s.Increment, s.Min, s.Max, s.Start, max(s.Cache, 1))
	if s.Cycle {
		o.WriteString(" CYCLE")
	} else {
		o.WriteString(" NO CYCLE")
	}
	return o.String()
}

// relationExists reports whether the target has a relation (table, sequence, index, …) of
// that name, or the plan makes one.
func (b *builder) relationExists(ctx context.Context, t change.Table) (bool, error) {
	if b.names[t] {
		return true, nil
	}
	var found bool
	err := b.tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2)`, t.Schema, t.Name).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("target: look up %s: %w", t, err)
	}
	return found, nil
}

// schema plans CREATE SCHEMA for a schema the target lacks.
func (b *builder) schema(ctx context.Context, name string) error {
	if b.seenSchemas[name] {
		return nil
	}
	b.seenSchemas[name] = true
	var found bool
	if err := b.tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, name).Scan(&found); err != nil {
		return fmt.Errorf("target: look up schema %s: %w", change.QuoteIdent(name), err)
	}
	if !found {
		b.plan.schemas = append(b.plan.schemas, "CREATE SCHEMA "+change.QuoteIdent(name))
		b.plan.Schemas = append(b.plan.Schemas, name)
	}
	return nil
}

// typeOf plans the creation of the type a column uses when the target lacks it: enums and
// domains are created, anything else is a problem naming the table, column and type.
func (b *builder) typeOf(ctx context.Context, oid uint32, table change.Table, column, typeName string) error {
	if b.seenTypes[oid] {
		return nil
	}
	b.seenTypes[oid] = true
	t, err := readType(ctx, b.prov, b.provVersion, oid)
	if err != nil {
		return fmt.Errorf("provider: column %s of table %s: %w", change.QuoteIdent(column), table, err)
	}
	if t.Name.Schema == "pg_catalog" {
		return nil
	}
	if t.Array {
		return b.typeOf(ctx, t.Elem, table, column, typeName)
	}
	var found bool
	err = b.tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
		WHERE n.nspname = $1 AND t.typname = $2)`, t.Name.Schema, t.Name.Name).Scan(&found)
	if err != nil {
		return fmt.Errorf("target: look up type %s: %w", t.Name, err)
	}
	if found {
		return nil
	}
	switch t.Kind {
	case 'e':
		labels := make([]string, len(t.Labels))
		for i, l := range t.Labels {
			labels[i] = change.QuoteLiteral(l)
		}
		if err := b.schema(ctx, t.Name.Schema); err != nil {
			return err
		}
		b.plan.types = append(b.plan.types, "CREATE TYPE "+t.Name.String()+" AS ENUM ("+strings.Join(labels, ", ")+")")
	case 'd':
		if err := b.typeOf(ctx, t.BaseOID, table, column, t.Base); err != nil {
			return err
		}
		if err := b.schema(ctx, t.Name.Schema); err != nil {
			return err
		}
		sql := "CREATE DOMAIN " + t.Name.String() + " AS " + t.Base
		if t.Default != "" {
			sql += " DEFAULT " + t.Default
		}
		if t.NotNull {
			sql += " NOT NULL"
		}
		for _, c := range t.Checks {
			sql += " CONSTRAINT " + change.QuoteIdent(c[0]) + " " + c[1]
		}
		b.plan.types = append(b.plan.types, sql)
	default:
		kind := map[byte]string{'b': "base", 'c': "composite", 'r': "range", 'm': "multirange", 'p': "pseudo"}[t.Kind]
		b.problems = append(b.problems, fmt.Sprintf("table %s: column %s has type %s (a %s type of the provider) that the target lacks: create the type on the target (e.g. CREATE EXTENSION), or the table",
			table, change.QuoteIdent(column), typeName, kind))
		return nil
	}
	b.plan.Types = append(b.plan.Types, t.Name)
	return nil
}

// funcExists reports whether the target has a function of that schema and name.
func (b *builder) funcExists(ctx context.Context, f change.Table) (bool, error) {
	var found bool
	err := b.tgt.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND p.proname = $2)`, f.Schema, f.Name).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("target: look up function %s: %w", f, err)
	}
	return found, nil
}

// freeName returns name when no relation of schema holds it on the target (nor in the plan)
// and takes it; "" otherwise.
func (b *builder) freeName(ctx context.Context, schema, name string) (string, error) {
	t := change.Table{Schema: schema, Name: name}
	taken, err := b.relationExists(ctx, t)
	if err != nil || taken {
		return "", err
	}
	b.names[t] = true
	return name, nil
}

// table plans one table.
func (b *builder) table(ctx context.Context, s Spec) error {
	d, err := readTable(ctx, b.prov, b.provVersion, s.Source)
	if err != nil {
		return fmt.Errorf("provider: definition of table %s: %w", s.Source, err)
	}
	exists, err := b.relationExists(ctx, s.Dest)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("target: %s exists already (or is created twice)", s.Dest)
	}
	b.names[s.Dest] = true
	if err := b.schema(ctx, s.Dest.Schema); err != nil {
		return err
	}
	byName := map[string]*Column{}
	for i := range d.Columns {
		byName[d.Columns[i].Name] = &d.Columns[i]
	}
	// The table keeps its shape when every column arrives under its own name, in order.
	sameShape := len(s.Columns) == len(d.Columns)
	destOf := map[string]string{} // source column → destination column
	for i, m := range s.Columns {
		if m.Source != "" {
			destOf[m.Source] = m.Name
		}
		sameShape = sameShape && i < len(d.Columns) && m.Source == d.Columns[i].Name && m.Name == m.Source
	}

	var defs []string
	for _, m := range s.Columns {
		c := byName[m.Source]
		if c == nil {
			b.problems = append(b.problems, fmt.Sprintf("table %s (from provider table %s): its handler computes column %s: --create-tables cannot know its type; create the table on the target",
				s.Dest, s.Source, change.QuoteIdent(m.Name)))
			continue
		}
		if err := b.typeOf(ctx, c.TypeOID, s.Source, c.Name, c.Type); err != nil {
			return err
		}
		def := change.QuoteIdent(m.Name) + " " + c.Type
		if c.Collation != "" {
			if b.tgtVersion >= 90100 {
				def += " COLLATE " + c.Collation
			} else {
				b.plan.Warnings = append(b.plan.Warnings, fmt.Sprintf("table %s: column %s is created without its collation %s (the target is older than 9.1)", s.Dest, change.QuoteIdent(m.Name), c.Collation))
			}
		}
		switch {
		case c.Generated:
			// Before 12, or where a handler renames columns the expression reads, a plain
			// column: it receives the provider's values.
			if b.tgtVersion >= 120000 && sameShape {
				def += " GENERATED ALWAYS AS (" + c.Default + ") STORED"
			}
		case c.Identity != 0:
			seq := b.identitySequence(s.Source, c.Name)
			switch {
			case seq == nil:
				// The target has the sequence (or it was not captured): nothing to draw from.
			case b.tgtVersion >= 100000 && seq.Name.Schema == s.Dest.Schema:
				// (An identity's sequence lives in its table's schema.)
				def += " GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME " + seq.Name.String() + b.seqOptions(seq, false) + ")"
				b.identityInColumn[seq.Name] = true
				b.plan.Sequences = append(b.plan.Sequences, seq.Name)
			default:
				def += " DEFAULT pg_catalog.nextval(" + change.QuoteLiteral(seq.Name.String()) + "::pg_catalog.regclass)"
			}
		case c.Default != "":
			portable := true
			for _, f := range c.DefaultFuncs {
				ok, err := b.funcExists(ctx, f)
				if err != nil {
					return err
				}
				if !ok {
					portable = false
					b.plan.Warnings = append(b.plan.Warnings, fmt.Sprintf("table %s: column %s is created without its default %s: the target has no function %s (add the default once it does)",
						s.Dest, change.QuoteIdent(m.Name), c.Default, f))
					break
				}
			}
			if portable {
				def += " DEFAULT " + c.Default
			}
		}
		if c.NotNull {
			def += " NOT NULL"
		}
		defs = append(defs, def)
	}

	if len(d.PrimaryKey) > 0 {
		var key []string
		for _, k := range d.PrimaryKey {
			if destOf[k] == "" {
				key = nil
				b.plan.Warnings = append(b.plan.Warnings, fmt.Sprintf("table %s: created without primary key: its handler leaves out key column %s", s.Dest, change.QuoteIdent(k)))
				break
			}
			key = append(key, change.QuoteIdent(destOf[k]))
		}
		if key != nil {
			name, err := b.freeName(ctx, s.Dest.Schema, d.PrimaryKeyName)
			if err != nil {
				return err
			}
			pk := "PRIMARY KEY (" + strings.Join(key, ", ") + ")"
			if name != "" {
				pk = "CONSTRAINT " + change.QuoteIdent(name) + " " + pk
			}
			defs = append(defs, pk)
		}
	}
	b.plan.tables = append(b.plan.tables, "CREATE TABLE "+s.Dest.String()+" (\n  "+strings.Join(defs, ",\n  ")+"\n)")
	b.plan.Tables = append(b.plan.Tables, s.Dest)

	// Sequences owned by the table's columns stay owned (OWNED BY wants the same schema).
	for _, sq := range b.seqs {
		if sq.OwnedBy != s.Source || b.identityInColumn[sq.Name] || destOf[sq.OwnedByColumn] == "" || sq.Name.Schema != s.Dest.Schema {
			continue
		}
		b.plan.owned = append(b.plan.owned, "ALTER SEQUENCE "+sq.Name.String()+" OWNED BY "+s.Dest.String()+"."+change.QuoteIdent(destOf[sq.OwnedByColumn]))
	}
	slices.Sort(b.plan.owned)

	for _, ix := range d.Indexes {
		var renamed string
		for _, c := range ix.Columns {
			if destOf[c] != c {
				renamed = c
				break
			}
		}
		if renamed != "" {
			b.plan.Warnings = append(b.plan.Warnings, fmt.Sprintf("table %s: index %s is not created: its handler renames or leaves out column %s", s.Dest, change.QuoteIdent(ix.Name), change.QuoteIdent(renamed)))
			continue
		}
		name, err := b.freeName(ctx, s.Dest.Schema, ix.Name)
		if err != nil {
			return err
		}
		sql := "CREATE INDEX "
		if ix.Unique {
			sql = "CREATE UNIQUE INDEX "
		}
		if name == "" {
			if b.tgtVersion < 90000 {
				// 8.4 wants a name: the first free one of name_1, name_2, …
				for i := 1; name == ""; i++ {
					if name, err = b.freeName(ctx, s.Dest.Schema, ix.Name+"_"+strconv.Itoa(i)); err != nil {
						return err
					}
				}
			}
		}
		if name != "" {
			sql += change.QuoteIdent(name) + " "
		}
		b.plan.Indexes = append(b.plan.Indexes, IndexStatement{Table: s.Dest, Index: ix.Name, SQL: sql + "ON " + s.Dest.String() + " " + ix.Body})
	}
	return nil
}

// identitySequence returns the sequence of an identity column that the plan creates, nil when
// the target has it or it was not asked for.
func (b *builder) identitySequence(table change.Table, column string) *Sequence {
	for _, sq := range b.seqs {
		if sq.Identity && sq.OwnedBy == table && sq.OwnedByColumn == column {
			return sq
		}
	}
	return nil
}
