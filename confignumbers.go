package smartproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/schema"
)

// Numbers in a config document are checked against the Go type they will
// land in before the document is decoded, so that a value the type cannot
// hold is an error naming its JSON path rather than a silent wrap-around
// (1e13 ms of inactivityTimeout overflowing time.Duration into a negative
// timeout, 1e300 truncating to 0, the default) or an error that does not
// say where. The walk follows the struct types and their json tags, so a
// field added to Config or Route is covered without being listed here.

var (
	millisType     = reflect.TypeFor[Millis]()
	portSpecType   = reflect.TypeFor[PortSpec]()
	targetPortType = reflect.TypeFor[TargetPort]()
)

// maxMillis is the largest Millis whose Duration does not overflow int64
// nanoseconds: about 292 years.
const maxMillis = math.MaxInt64 / int64(1e6)

// numberChecker collects the mistakes of one walk, each against its
// JSON path.
type numberChecker struct {
	schema.Collector
}

// checkNumbers walks doc, a generic JSON or YAML value, as the type t
// would decode it, and returns doc with integral numbers written as plain
// integers (so that 1e3 decodes into an int as 1000 does). path is the
// JSON path of doc, used in errors.
func (c *numberChecker) check(doc any, t reflect.Type, path string) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case millisType:
		if lit, ok := numberLiteral(doc); ok {
			if _, err := parseMillis(lit); err != nil {
				c.Failf(path, "%v", err)
			}
		}
		return doc
	case portSpecType:
		if list, ok := doc.([]any); ok {
			for i, item := range list {
				list[i] = c.portItem(item, fmt.Sprintf("%s[%d]", path, i))
			}
			return list
		}
		return c.portItem(doc, path)
	case targetPortType:
		return c.integer(doc, path, 64, true)
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return c.integer(doc, path, t.Bits(), true)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return c.integer(doc, path, t.Bits(), false)
	case reflect.Float32, reflect.Float64:
		if lit, ok := numberLiteral(doc); ok {
			f, err := strconv.ParseFloat(lit, t.Bits())
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				c.Failf(path, "%s is out of range for a number", lit)
			}
		}
		return doc
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return doc
		}
		for _, key := range slices.Sorted(maps.Keys(m)) { // errors in a stable order
			val := m[key]
			if f, ok := fieldByJSONName(t, key); ok {
				m[key] = c.check(val, f.Type, joinPath(path, key))
			}
		}
		return m
	case reflect.Slice, reflect.Array:
		list, ok := doc.([]any)
		if !ok {
			return doc
		}
		for i, item := range list {
			list[i] = c.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
		return list
	case reflect.Map:
		m, ok := doc.(map[string]any)
		if !ok {
			return doc
		}
		for _, key := range slices.Sorted(maps.Keys(m)) {
			m[key] = c.check(m[key], t.Elem(), joinPath(path, key))
		}
		return m
	}
	return doc
}

// portItem checks one element of a PortSpec: a port or {from, to}.
func (c *numberChecker) portItem(doc any, path string) any {
	if m, ok := doc.(map[string]any); ok {
		for _, k := range []string{"from", "to"} {
			if v, present := m[k]; present {
				m[k] = c.integer(v, path+"."+k, 64, true)
			}
		}
		return m
	}
	return c.integer(doc, path, 64, true)
}

// integer checks that doc, when it is a number, is a whole number that a
// signed or unsigned integer of bits bits holds, and returns it as a plain
// integer literal. Non-numbers are left to the decoder's type errors.
func (c *numberChecker) integer(doc any, path string, bits int, signed bool) any {
	lit, ok := numberLiteral(doc)
	if !ok {
		return doc
	}
	lo, hi := int64(math.MinInt64)>>(64-bits), int64(math.MaxInt64)>>(64-bits)
	if !signed {
		lo = 0
	}
	if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
		if i < lo || i > hi {
			c.Failf(path, "%s is out of range (%d to %d)", lit, lo, hi)
		}
		return doc
	}
	f, err := strconv.ParseFloat(lit, 64)
	switch {
	case err == nil && f != math.Trunc(f):
		c.Failf(path, "%s is not a whole number", lit)
	// float64(hi) rounds up to 2^63 for 64 bits, so >= keeps 2^63 out.
	case err != nil || math.IsInf(f, 0) || f < float64(lo) || f >= float64(hi)+1:
		c.Failf(path, "%s is out of range (%d to %d)", lit, lo, hi)
	default:
		return json.Number(strconv.FormatInt(int64(f), 10))
	}
	return doc
}

// numberLiteral returns the text of a number of a generic document: a
// json.Number (JSON decoded with UseNumber) or the numbers YAML yields.
func numberLiteral(doc any) (string, bool) {
	switch v := doc.(type) {
	case json.Number:
		return string(v), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	}
	return "", false
}

// parseMillis reads a number of milliseconds: a whole number from 0 up to
// what a time.Duration holds.
func parseMillis(lit string) (Millis, error) {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("want milliseconds as a number, got %s", lit)
	}
	switch {
	case math.IsNaN(f):
		return 0, fmt.Errorf("want milliseconds as a number, got %s", lit)
	case f < 0:
		return 0, fmt.Errorf("duration must not be negative, got %s", lit)
	case f != math.Trunc(f) && !math.IsInf(f, 0):
		return 0, fmt.Errorf("%s ms is not a whole number of milliseconds", lit)
	case f > float64(maxMillis) || math.IsInf(f, 0):
		return 0, fmt.Errorf("%s ms overflows a duration (max %d ms ≈ 292 years)", lit, maxMillis)
	}
	return Millis(f), nil
}

// fieldByJSONName finds the field of struct t that encoding/json would
// fill from key: exact tag name first, then case-insensitively, as the
// decoder does. Embedded structs are searched too.
func fieldByJSONName(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if !found && strings.EqualFold(name, key) {
			fold, found = f, true
		}
	}
	return fold, found
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
