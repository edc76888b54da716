package jsonstrict

import (
	"encoding/json"
	"reflect"
	"testing"
)

type flatItem struct {
	Key     string          `json:"key"`
	Request json.RawMessage `json:"request"`
	Note    string
}

// A flat struct is filled from the scan's spans with what encoding/json
// would decode from the same input.
func FuzzFlatDecode(f *testing.F) {
	for _, s := range []string{
		`{"key":"a","request":{"contents":[{"parts":[{"text":"x"}]}]}}`,
		` { "request" : [ 1, {"a":"\u00e9\"<"} ] , "key" : "k\u00e9\n\"\\\/\ud83d\ude00" , "Note": "n" } `,
		`{"key":null,"request":null}`,
		`{"key":"","request":"s","Note":null}`,
		`null`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got flatItem
		err := Decode(data, &got, Limits{})
		if err != nil {
			return
		}
		var want flatItem
		if err := unmarshal(data, &want); err != nil {
			t.Fatalf("encoding/json refused what the flat path took: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("flat %+v, encoding/json %+v", got, want)
		}
	})
}

// Only structs of plain string and json.RawMessage fields take the flat
// path; DecodeLines uses it too.
func TestFlatPlan(t *testing.T) {
	type withInt struct {
		A string `json:"a"`
		N int    `json:"n"`
	}
	type quoted struct {
		A string `json:"a,string"`
	}
	type embedded struct{ flatItem }
	for _, c := range []struct {
		t    reflect.Type
		flat bool
	}{
		{reflect.TypeFor[flatItem](), true},
		{reflect.TypeFor[withInt](), false},
		{reflect.TypeFor[quoted](), false},
		{reflect.TypeFor[embedded](), false},
		{reflect.TypeFor[map[string]string](), false},
	} {
		if got := flatPlanOf(c.t) != nil; got != c.flat {
			t.Errorf("%v flat = %v, want %v", c.t, got, c.flat)
		}
	}
	var keys []string
	err := DecodeLines([]byte("{\"key\":\"a\\u0062\",\"request\":{ \"x\" : 1 }}\n{\"key\":\"c\",\"request\":[]}\n"), Limits{},
		func(line int, it *flatItem) error {
			keys = append(keys, it.Key+"="+string(it.Request))
			return nil
		})
	if err != nil || !reflect.DeepEqual(keys, []string{`ab={ "x" : 1 }`, "c=[]"}) {
		t.Errorf("DecodeLines = %q, %v", keys, err)
	}
}
