// Package arch holds no code: its test checks the package graph that
// docs/architecture.md draws, so an import that breaks a rule fails CI
// instead of eroding the design one convenient shortcut at a time.
package arch
