//go:build tools

// Package tools records the commands this module builds, so `go mod tidy` keeps mp4ff.
package tools

import (
	_ "github.com/Eyevinn/mp4ff/cmd/mp4ff-encrypt"
)
