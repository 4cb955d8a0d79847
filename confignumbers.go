package smartproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Numbers in a config document are checked against the Go type they
// land in as the document is decoded (configdecode.go), so that a value
// the type cannot hold is an error naming its JSON path rather than a
// silent wrap-around (1e13 ms of inactivityTimeout overflowing
// time.Duration into a negative timeout, 1e300 truncating to 0, the
// default) or an error that does not say where.

var (
	millisType     = reflect.TypeFor[Millis]()
	portSpecType   = reflect.TypeFor[PortSpec]()
	targetPortType = reflect.TypeFor[TargetPort]()
)

// maxMillis is the largest Millis whose Duration does not overflow int64
// nanoseconds: about 292 years.
const maxMillis = math.MaxInt64 / int64(1e6)

// checkInteger reads lit, a number, as a whole number that a signed or
// unsigned integer of bits bits holds: 1e3 is 1000, 1.5 and 1e300 are
// mistakes.
func checkInteger(lit string, bits int, signed bool) (int64, error) {
	lo, hi := int64(math.MinInt64)>>(64-bits), int64(math.MaxInt64)>>(64-bits)
	if !signed {
		lo = 0
	}
	if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
		if i < lo || i > hi {
			return 0, fmt.Errorf("%s is out of range (%d to %d)", lit, lo, hi)
		}
		return i, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	switch {
	case err == nil && f != math.Trunc(f):
		return 0, fmt.Errorf("%s is not a whole number", lit)
	// float64(hi) rounds up to 2^63 for 64 bits, so >= keeps 2^63 out.
	case err != nil || math.IsInf(f, 0) || f < float64(lo) || f >= float64(hi)+1:
		return 0, fmt.Errorf("%s is out of range (%d to %d)", lit, lo, hi)
	}
	return int64(f), nil
}

// checkFloat reads lit as a finite number of a float of bits bits.
func checkFloat(lit string, bits int) (float64, error) {
	f, err := strconv.ParseFloat(lit, bits)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("%s is out of range for a number", lit)
	}
	return f, nil
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
		name, ok := jsonName(f)
		if !ok {
			continue
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

// jsonName is the name field f has in a config document; false for a
// field that a document cannot set (unexported, embedded, or `json:"-"`).
func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() || f.Anonymous {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return "", false
	}
	if name == "" {
		name = f.Name
	}
	return name, true
}
