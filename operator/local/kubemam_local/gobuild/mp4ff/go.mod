// Wrapper module: pins mp4ff so `go build` of its commands needs only this go.mod and go.sum
// (the module proxy here does not serve version lists, which `go install pkg@version` asks for).
module kubemam.local/gobuild/mp4ff

go 1.22

require github.com/Eyevinn/mp4ff v0.56.0
