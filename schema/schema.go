// Package schema holds the small value types that smartproxy's
// configuration schema shares between the root package and its leaf
// packages (such as auth), so that a leaf can describe its own part of a
// route's configuration without importing the root: StringList, Seconds,
// and the FieldError Collector every part's validation reports through.
//
// The root package re-exports the value types under type aliases
// (smartproxy.StringList, smartproxy.Seconds), so configurations and
// Route literals read the same either way; package auth names the field
// errors auth.FieldError and auth.FieldErrors.
package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// StringList is a list of strings that JSON may also give as one string.
type StringList []string

// UnmarshalJSON accepts "a" or ["a", "b"].
func (l *StringList) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*l = StringList{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("want a string or a list of strings, got %s", data)
	}
	*l = list
	return nil
}

// MarshalJSON writes one element as a plain string.
func (l StringList) MarshalJSON() ([]byte, error) {
	if len(l) == 1 {
		return json.Marshal(l[0])
	}
	return json.Marshal([]string(l))
}
