// gitops-health evaluates kubemam's documented GitOps health checks the way the tools do:
// Argo CD's Lua health script in gopher-lua (the interpreter Argo CD embeds, with `obj` set to the
// object) and Flux's healthCheckExprs in cel-go with optional types (kustomize-controller binds the
// object's top-level fields — apiVersion, kind, metadata, spec, status — as variables).
//
//	gitops-health -lua script.lua -current EXPR -failed EXPR < object.json
//
// prints one JSON line: {"argo": {"status": ..., "message": ...}, "flux": "current|failed|inProgress"}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/google/cel-go/cel"
	lua "github.com/yuin/gopher-lua"
)

func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := L.NewTable()
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case map[string]any:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	}
	return lua.LNil
}

func argo(script string, object map[string]any) (map[string]string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return map[string]string{"status": result.RawGetString("status").String(),
		"message": result.RawGetString("message").String()}, nil
}

func flux(current, failed string, object map[string]any) (string, error) {
	var options []cel.EnvOption
	options = append(options, cel.OptionalTypes())
	for _, field := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		options = append(options, cel.Variable(field, cel.DynType))
	}
	env, err := cel.NewEnv(options...)
	if err != nil {
		return "", err
	}
	vars := map[string]any{}
	for _, field := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		if value, ok := object[field]; ok {
			vars[field] = value
		} else {
			vars[field] = map[string]any{}
		}
	}
	eval := func(expr string) (bool, error) {
		ast, issues := env.Compile(expr)
		if issues != nil && issues.Err() != nil {
			return false, issues.Err()
		}
		program, err := env.Program(ast)
		if err != nil {
			return false, err
		}
		out, _, err := program.Eval(vars)
		if err != nil {
			return false, err
		}
		value, ok := out.Value().(bool)
		if !ok {
			return false, fmt.Errorf("%q is not a boolean", expr)
		}
		return value, nil
	}
	// As kustomize-controller's CEL status reader (Flux RFC-0009): a status.observedGeneration that differs
	// from metadata.generation is in progress before any expression is evaluated; then failed, then current;
	// neither is in progress.
	status, _ := object["status"].(map[string]any)
	metadata, _ := object["metadata"].(map[string]any)
	if observed, ok := status["observedGeneration"]; ok && observed != metadata["generation"] {
		return "inProgress", nil
	}
	if isFailed, err := eval(failed); err != nil {
		return "", err
	} else if isFailed {
		return "failed", nil
	}
	if isCurrent, err := eval(current); err != nil {
		return "", err
	} else if isCurrent {
		return "current", nil
	}
	return "inProgress", nil
}

func main() {
	luaFile := flag.String("lua", "", "Argo CD health script")
	current := flag.String("current", "", "Flux current expression")
	failed := flag.String("failed", "false", "Flux failed expression")
	flag.Parse()
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var object map[string]any
	if err := json.Unmarshal(raw, &object); err != nil {
		fmt.Fprintln(os.Stderr, "the object is not JSON:", err)
		os.Exit(2)
	}
	report := map[string]any{}
	if *luaFile != "" {
		script, err := os.ReadFile(*luaFile)
		if err != nil {
			panic(err)
		}
		health, err := argo(string(script), object)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lua:", err)
			os.Exit(1)
		}
		report["argo"] = health
	}
	if *current != "" {
		state, err := flux(*current, *failed, object)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cel:", err)
			os.Exit(1)
		}
		report["flux"] = state
	}
	out, _ := json.Marshal(report)
	fmt.Println(string(out))
}
