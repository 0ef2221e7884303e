package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/skiffdb/skiff/internal/pg"
)

// ErrForeignCode: a target table holds code that a role other than a superuser controls and
// that a write into it would run with the writer's rights (see ForeignCode).
var ErrForeignCode = errors.New("would run code another role controls with superuser rights")

// relsAndTypes starts a query about the table $1 (an SQL name): base is its oid, rels the
// table and every partition or inheritance child its rows may go to, types the types of their
// columns and, for domains, their base types (domains of domains included).
const relsAndTypes = `WITH RECURSIVE base(oid) AS (
    SELECT $1::pg_catalog.text::pg_catalog.regclass::pg_catalog.oid
), rels(oid) AS (
    SELECT oid FROM base
  UNION
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN rels r ON i.inhparent OPERATOR(pg_catalog.=) r.oid
), types(oid) AS (
    SELECT a.atttypid FROM pg_catalog.pg_attribute a JOIN rels r ON a.attrelid OPERATOR(pg_catalog.=) r.oid
     WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
  UNION
    SELECT t.typbasetype FROM pg_catalog.pg_type t JOIN types ON t.oid OPERATOR(pg_catalog.=) types.oid
     WHERE t.typtype OPERATOR(pg_catalog.=) 'd'
)`

// foreignCodeSQL finds what a write into relation $1 (and its partitions or inheritance
// children, where rows may be routed) runs that a role other than a superuser controls:
// a function such a role owns that a trigger firing under the session ($2: the tgenabled
// values that fire), a trigger's WHEN, a rule, an index expression or predicate, a CHECK or
// exclusion constraint, a column default or generated column, or a partition key depends on,
// directly or through an operator, or a constraint of a domain over a column's type (domains
// of domains included); and any rule other than SELECT on a table such a role owns (its
// actions may write other tables). SECURITY DEFINER does not make such a function safe: its
// owner may turn it into SECURITY INVOKER at any time, without a lock on the table. It
// returns the first one found, described, or no row. Every object is read from the catalogs
// by oid and every name is schema-qualified (8.4+).
const foreignCodeSQL = relsAndTypes + `, objs(classid, objid, rel, what) AS (
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, x.indexrelid, x.indrelid,
           'index ' OPERATOR(pg_catalog.||) x.indexrelid::pg_catalog.regclass::pg_catalog.text
      FROM pg_catalog.pg_index x WHERE x.indrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, r.oid, r.oid, 'partition key' FROM rels r
  UNION ALL
    SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid, k.conrelid,
           'constraint ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(k.conname)
      FROM pg_catalog.pg_constraint k WHERE k.conrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid, (SELECT oid FROM base),
           'constraint ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(k.conname) OPERATOR(pg_catalog.||)
           ' of domain ' OPERATOR(pg_catalog.||) pg_catalog.format_type(k.contypid, NULL)
      FROM pg_catalog.pg_constraint k WHERE k.contypid IN (SELECT oid FROM types)
  UNION ALL
    SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, d.oid, d.adrelid,
           'default or generated expression of column ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname)
      FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) d.adrelid
           AND a.attnum OPERATOR(pg_catalog.=) d.adnum
     WHERE d.adrelid IN (SELECT oid FROM rels)
  UNION ALL
    SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass, g.oid, g.tgrelid,
           'trigger ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(g.tgname)
      FROM pg_catalog.pg_trigger g WHERE g.tgrelid IN (SELECT oid FROM rels)
       AND g.tgenabled::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])
  UNION ALL
    SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, w.oid, w.ev_class,
           'rule ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(w.rulename)
      FROM pg_catalog.pg_rewrite w WHERE w.ev_class IN (SELECT oid FROM rels)
       AND w.ev_type OPERATOR(pg_catalog.<>) '1'
)
SELECT o.rel::pg_catalog.regclass::pg_catalog.text, o.what,
       'runs function ' OPERATOR(pg_catalog.||) p.oid::pg_catalog.regprocedure::pg_catalog.text
       OPERATOR(pg_catalog.||) ', owned by ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(u.rolname)
  FROM objs o
  JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) o.classid AND d.objid OPERATOR(pg_catalog.=) o.objid
  LEFT JOIN pg_catalog.pg_operator op ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass
       AND op.oid OPERATOR(pg_catalog.=) d.refobjid
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) CASE WHEN d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
       THEN d.refobjid ELSE op.oprcode::pg_catalog.oid END
  JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) p.proowner
 WHERE NOT u.rolsuper
UNION ALL
SELECT w.ev_class::pg_catalog.regclass::pg_catalog.text, 'rule ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(w.rulename),
       'rewrites the write, and its table belongs to ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(u.rolname)
  FROM pg_catalog.pg_rewrite w JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) w.ev_class
  JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) c.relowner
 WHERE w.ev_class IN (SELECT oid FROM rels) AND w.ev_type OPERATOR(pg_catalog.<>) '1' AND NOT u.rolsuper
LIMIT 1`

// ForeignCode returns an error (ErrForeignCode) when a write into the table rel (an SQL
// name) would run code that a role other than a superuser controls (see foreignCodeSQL).
// Call it for a session that is a superuser's (IsSuperuser): that role would get the
// superuser's rights. replica says the session writes with session_replication_role =
// replica (triggers enabled ALWAYS or REPLICA fire) or not (ORIGIN and ALWAYS fire). Lock the
// table first (any lock a write takes): the objects it reads cannot change under a lock that
// conflicts with their DDL until the transaction ends.
func ForeignCode(ctx context.Context, db pg.DB, rel string, replica bool) error {
	fires := []string{"O", "A"}
	if replica {
		fires = []string{"R", "A"}
	}
	var table, what, why string
	err := db.QueryRow(ctx, foreignCodeSQL, rel, fires).Scan(&table, &what, &why)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check code on %s: %w", rel, err)
	}
	return fmt.Errorf("target table %s: its %s %s, not a superuser: writing into it as a superuser %w "+
		"(that role could make itself superuser); have a superuser own that code, or connect to the target as a role that is not a superuser (docs/security.md)",
		table, what, why, ErrForeignCode)
}

// IsSuperuser reports whether the session's role is a superuser.
func IsSuperuser(ctx context.Context, db pg.DB) (bool, error) {
	var super bool
	err := db.QueryRow(ctx, `SELECT pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on'`).Scan(&super)
	return super, err
}

// SuperuserOwned reports whether the table rel (an SQL name), every partition or child its
// rows may go to, and every domain its columns' types are (domains of domains included) belong
// to superusers: then only a superuser can attach code to them, and a check by ForeignCode
// holds until a superuser changes them.
func SuperuserOwned(ctx context.Context, db pg.DB, rel string) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, relsAndTypes+`
SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) c.relowner
                    WHERE c.oid IN (SELECT oid FROM rels) AND NOT u.rolsuper)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) t.typowner
                    WHERE t.oid IN (SELECT oid FROM types) AND t.typtype OPERATOR(pg_catalog.=) 'd' AND NOT u.rolsuper)`, rel).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("check owners of %s: %w", rel, err)
	}
	return ok, nil
}
