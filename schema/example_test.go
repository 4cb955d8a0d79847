package schema_test

import (
	"encoding/json"
	"fmt"

	"github.com/gosmartproxy/smartproxy/schema"
)

// A StringList reads one string or a list, and writes one element back as
// a plain string.
func ExampleStringList() {
	var one, two schema.StringList
	if err := json.Unmarshal([]byte(`"RS256"`), &one); err != nil {
		panic(err)
	}
	if err := json.Unmarshal([]byte(`["ES256", "EdDSA"]`), &two); err != nil {
		panic(err)
	}
	a, _ := json.Marshal(one)
	b, _ := json.Marshal(two)
	fmt.Println(len(one), len(two), string(a), string(b))
	fmt.Println(json.Unmarshal([]byte(`7`), &one))
	// Output:
	// 1 2 "RS256" ["ES256","EdDSA"]
	// want a string or a list of strings, got 7
}

// A Collector gathers every mistake of a validation, each with its field
// path, so a caller can report them all at once.
func ExampleCollector() {
	c := schema.Collector{Prefix: "rateLimit."}
	c.Failf("maxRequests", "must be > 0, got %d", 0)
	c.Failf("window", "must be > 0 seconds, got %d", -1)
	fmt.Println(c.Err())
	fmt.Println(len(c.Errors()), c.Errors()[1].Field)
	// Output:
	// rateLimit.maxRequests: must be > 0, got 0; rateLimit.window: must be > 0 seconds, got -1
	// 2 rateLimit.window
}
