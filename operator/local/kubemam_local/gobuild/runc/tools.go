//go:build tools

// Package tools records the command this module builds, so `go mod tidy` keeps runc.
package tools

import (
	_ "github.com/opencontainers/runc"
)
