// kubemam-encrypt (main.go): mp4ff's CENC over one track file, the key read from stdin or a file, never
// argv. This module pins mp4ff so `go build` needs only this go.mod and go.sum (the module proxy here
// serves no version lists, which `go install pkg@version` asks for); the worker image's Go stage and
// kubemam_local/gotools.py build from it.
module kubemam.local/gobuild/mp4ff

go 1.22

require github.com/Eyevinn/mp4ff v0.56.0
