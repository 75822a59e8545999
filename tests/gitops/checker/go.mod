// The GitOps health checks of docs/gitops.md, run as Argo CD and Flux run them (tests/integration/test_gitops.py).
module kubemam.test/gitops-health

go 1.23.0

require (
	github.com/google/cel-go v0.31.0
	github.com/yuin/gopher-lua v1.1.2
)

require (
	cel.dev/expr v0.25.1 // indirect
	github.com/antlr4-go/antlr/v4 v4.13.1 // indirect
	go.yaml.in/yaml/v3 v3.0.4 // indirect
	golang.org/x/exp v0.0.0-20240823005443-9b4947da3948 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/protobuf v1.36.10 // indirect
)
