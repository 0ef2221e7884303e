// Package sql embeds skiff's database schema as goose migrations: provider/ is installed on a
// provider database by `skiff init provider`, target/ on a target by `skiff init target`.
// Upgrades of skiff are new migration files; a migration once released is never edited.
//
// Every provider migration must install on PostgreSQL 8.4: no DO blocks, no IF NOT EXISTS, no
// format(), string_agg, json, ON CONFLICT, identity columns or trigger WHEN clauses. The test
// in this package lints for them.
package sql

import "embed"

// Provider holds the provider schema's migrations.
//
//go:embed provider/*.sql
var Provider embed.FS

// Target holds the target schema's migrations.
//
//go:embed target/*.sql
var Target embed.FS
