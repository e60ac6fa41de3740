// Command gitopscheck shows how Argo CD and Flux would read the health of ProductImport
// documents, without running either of them.
//
// Usage: gitopscheck LUA_SCRIPT FILE...
//
// For each FILE (one YAML resource document) it prints one JSON line:
//
//	{"file": FILE, "argo": {"status", "message"}, "kstatus": {"status", "message"}}
//
// "argo" is the result of the Argo CD health check script LUA_SCRIPT, run the way Argo CD
// runs a check installed through argocd-cm: in gopher-lua (the VM Argo CD embeds), with
// the object handed over as the Lua table `obj` and only the base, table and package
// libraries open. "kstatus" is sigs.k8s.io/cli-utils' status.Compute, the kstatus code
// Flux's health checks (healthChecks, wait: true) use.
//
// A file that cannot be read or evaluated still gets a line, with an "error" field, and
// the exit code is then 1, so a caller sees every problem in one run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Health is Argo CD's health.HealthStatus as a Lua check returns it.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// KStatus is the part of kstatus' Result that Flux reports.
type KStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type line struct {
	File    string   `json:"file"`
	Argo    *Health  `json:"argo,omitempty"`
	KStatus *KStatus `json:"kstatus,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Argo CD accepts exactly these; anything else becomes Unknown with this message.
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

const invalidHealthStatus = "Lua returned an invalid health status"

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gitopscheck LUA_SCRIPT FILE...")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "gitopscheck: %v\n", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	failed := false
	for _, file := range os.Args[2:] {
		l := check(string(script), file)
		if l.Error != "" {
			failed = true
			fmt.Fprintf(os.Stderr, "gitopscheck: %s: %s\n", file, l.Error)
		}
		if err := out.Encode(l); err != nil {
			fmt.Fprintf(os.Stderr, "gitopscheck: %v\n", err)
			os.Exit(1)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(script, file string) line {
	l := line{File: file}
	obj, err := load(file)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	var errs []error
	if h, err := argoHealth(script, obj); err != nil {
		errs = append(errs, fmt.Errorf("argo: %w", err))
	} else {
		l.Argo = h
	}
	if res, err := status.Compute(obj); err != nil {
		errs = append(errs, fmt.Errorf("kstatus: %w", err))
	} else {
		l.KStatus = &KStatus{Status: res.Status.String(), Message: res.Message}
	}
	if err := errors.Join(errs...); err != nil {
		l.Error = err.Error()
	}
	return l
}

// load decodes a YAML document the way objects reach both tools from the API server:
// through JSON into an Unstructured, so integers are int64 (kstatus' NestedInt64 on
// metadata.generation and status.observedGeneration needs exactly that).
func load(file string) (*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("decoding the resource: %w", err)
	}
	return u, nil
}

// argoHealth mirrors Argo CD's util/lua VM.runLua + ExecuteHealthLua for a script from
// argocd-cm (useOpenLibs unset): no standard libraries but base, table and package (Argo
// CD also adds a reduced os library, which this check does not need: a script that uses
// os fails here, which errs on the safe side), a one-second limit, `obj` as a Lua table,
// and the value left on top of the stack read back as {status, message}.
func argoHealth(script string, obj *unstructured.Unstructured) (*Health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", decodeValue(L, obj.Object))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	ret := L.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	// Argo CD encodes the table to JSON and unmarshals it into HealthStatus; doing the
	// same keeps its failure modes (e.g. a non-string message is an error there too).
	js, err := json.Marshal(encodeValue(ret))
	if err != nil {
		return nil, err
	}
	h := &Health{}
	if err := json.Unmarshal(js, h); err != nil {
		return nil, fmt.Errorf("reading the returned table %s: %w", js, err)
	}
	if !validHealth[h.Status] {
		return &Health{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return h, nil
}

// decodeValue converts an unstructured value into Lua exactly as Argo CD's decodeValue
// does: maps become hash tables, slices become arrays, numbers become LNumber.
func decodeValue(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := L.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(L, item))
		}
		return arr
	case map[string]any:
		tbl := L.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(L, item))
		}
		return tbl
	}
	return lua.LNil
}

// encodeValue turns a Lua value back into Go values for encoding/json, following
// layeh.com/gopher-json (what Argo CD uses): a table with only keys 1..n is an array,
// any other table an object with string keys.
func encodeValue(v lua.LValue) any {
	switch x := v.(type) {
	case lua.LBool:
		return bool(x)
	case lua.LNumber:
		return float64(x)
	case lua.LString:
		return string(x)
	case *lua.LTable:
		if n := x.MaxN(); n > 0 && x.Len() == n {
			arr := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				arr = append(arr, encodeValue(x.RawGetInt(i)))
			}
			return arr
		}
		obj := map[string]any{}
		x.ForEach(func(k, val lua.LValue) {
			obj[k.String()] = encodeValue(val)
		})
		return obj
	}
	return nil
}
