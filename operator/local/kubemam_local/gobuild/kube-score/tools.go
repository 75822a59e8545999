//go:build tools

// Package tools records the command this module builds, so `go mod tidy` keeps kube-score.
package tools

import (
	_ "github.com/zegl/kube-score/cmd/kube-score"
)
