package textmatch_test

import (
	"fmt"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/textmatch"
)

func ExampleCompilePath() {
	pp, err := textmatch.CompilePath("/users/:id/*")
	if err != nil {
		panic(err)
	}
	m, ok := pp.Capture("/users/42/posts/7")
	fmt.Println(ok, m.Params["id"], m.Remainder)
	fmt.Println(pp.Match("/users"))

	// A pattern ending in '/' is a prefix, as in TS.
	api, _ := textmatch.CompilePath("/api/")
	fmt.Println(api.Match("/api/users"), api.Match("/apix"))
	// Output:
	// true 42 posts/7
	// false
	// true false
}

func ExampleExpand() {
	vars := map[string]string{"domain": "example.com", "path": "/a%2Fb"}
	lookup := func(name string) (string, bool) {
		if h, ok := strings.CutPrefix(name, "headers."); ok {
			return "header " + h, true
		}
		v, ok := vars[name]
		return v, ok
	}
	fmt.Println(textmatch.Expand("https://{domain}{path}", lookup))
	fmt.Println(textmatch.Expand("{headers.x-id} {unknown} {a b} {}", lookup))
	// Output:
	// https://example.com/a%2Fb
	// header x-id {unknown} {a b} {}
}
